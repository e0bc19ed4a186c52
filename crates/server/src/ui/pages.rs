//! The HTML of every page, as maud templates (checked and compiled with the
//! binary; every interpolation is escaped). Pages work without script: the
//! search and filter forms are plain GET forms, pagination is links. The
//! script only adds search-as-you-type, copy buttons and deletes.

use super::data::{human_size, short_digest, RepoList, RepoPage};
use super::image::{Compare, ImagePage};
use super::{View, Viewer};
use maud::{html, Markup, DOCTYPE};
use serde::Serialize;

/// The account page's data.
#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub user: Option<String>,
    pub groups: Vec<String>,
    /// Logged in through the browser.
    pub session: bool,
    /// Where to log in, one link per provider.
    pub logins: Vec<String>,
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A path under `/ui/r/` for a repository (names need no escaping in a
/// path: lower-case letters, digits, `._-/`).
fn repo_href(repo: &str) -> String {
    format!("/ui/r/{repo}")
}

fn image_href(repo: &str, reference: &str) -> String {
    format!("/ui/r/{repo}/-/image/{reference}")
}

/// `2026-12-04 18:01:32 UTC` inside a `<time>`.
fn when(t: Option<&str>) -> Markup {
    match t {
        Some(t) => html! { time datetime=(t) { (t.replace('T', " ").replace('Z', " UTC")) } },
        None => html! { span.muted { "never" } },
    }
}

fn copy_button(text: &str, what: &str) -> Markup {
    html! {
        button.copy type="button" hidden data-copy=(text) aria-label=(format!("Copy {what}")) { "Copy" }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Berth" }
            link rel="stylesheet" href="/ui/style.css";
            script src="/ui/app.js" defer {}
        }
    }
}

fn layout(v: &Viewer, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/" { "Berth" }
                        a href="/" { "Repositories" }
                        a href="/ui/account" { "Account" }
                    }
                    div.who {
                        @if let Some(u) = v.user() {
                            span id="whoami" { "Signed in as " b { (u) } }
                            @if v.has_session() {
                                button id="logout" type="button" hidden { "Log out" }
                            }
                        } @else {
                            @for (href, name) in v.logins() {
                                a.login href=(href) { "Log in with " (name) }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" { (body) }
                div id="status" role="status" aria-live="polite" class="visually-hidden" {}
            }
        }
    }
}

/// The page for one view.
pub fn render(v: &Viewer, view: &View) -> Markup {
    match view {
        View::Repos(l) => layout(v, "Repositories", repos(l)),
        View::Repo(p) => layout(v, &p.name, repo(p)),
        View::Image(i) => layout(
            v,
            &format!("{}@{}", i.repository, short_digest(&i.digest)),
            image(i),
        ),
        View::Compare(c) => layout(v, &format!("Compare · {}", c.repository), compare(c)),
        View::ComparePick { repository, tags } => layout(
            v,
            &format!("Compare · {repository}"),
            html! {
                (crumbs(repository, Some("Compare")))
                h1 { "Compare two images of " (repository) }
                (compare_form(repository, "", "", tags))
            },
        ),
        View::Account(a) => layout(v, "Account", account(a, v)),
    }
}

/// The answer for anything absent or not readable (the same either way).
pub fn not_found() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Not found"))
            body {
                main id="main" {
                    h1 { "Not found" }
                    p { "There is nothing here, or you may not see it. " a href="/" { "All repositories" } }
                }
            }
        }
    }
}

fn crumbs(repo: &str, last: Option<&str>) -> Markup {
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/" { "Repositories" } " / "
            @if let Some(l) = last {
                a href=(repo_href(repo)) { (repo) } " / " span aria-current="page" { (l) }
            } @else {
                span aria-current="page" { (repo) }
            }
        }
    }
}

fn repos(l: &RepoList) -> Markup {
    let desc = l.sort == "-name";
    html! {
        h1 { "Repositories" }
        form.bar role="search" method="get" action="/" data-live="results" {
            label for="q" { "Search repositories" }
            input id="q" type="search" name="q" value=(l.query) maxlength="128" autocomplete="off" placeholder="name contains…";
            label for="sort" { "Sort" }
            select id="sort" name="sort" {
                option value="name" selected[!desc] { "Name A–Z" }
                option value="-name" selected[desc] { "Name Z–A" }
            }
            button type="submit" { "Search" }
        }
        div id="results" {
            @if l.repositories.is_empty() {
                p.empty { "No repositories" @if !l.query.is_empty() { " match “" (l.query) "”" } "." }
            } @else {
                div.scroll {
                    table {
                        caption.visually-hidden { "Repositories you may pull" }
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Tags" } th scope="col" { "Last push" } th scope="col" { "Size" } } }
                        tbody {
                            @for r in &l.repositories {
                                tr {
                                    th scope="row" { a href=(repo_href(&r.name)) { (r.name) } }
                                    td.num { (r.tags) }
                                    td { (when(r.last_push.as_deref())) }
                                    td.num { (human_size(r.size)) }
                                }
                            }
                        }
                    }
                }
            }
            nav.pages aria-label="Pages" {
                @if l.has_previous {
                    a href=(format!("/?q={}&sort={}", enc(&l.query), l.sort)) { "First page" }
                }
                @if let Some(next) = &l.next {
                    a rel="next" href=(format!("/?q={}&sort={}&after={}", enc(&l.query), l.sort, enc(next))) { "Next page" }
                }
            }
        }
    }
}

fn repo(p: &RepoPage) -> Markup {
    let base = repo_href(&p.name);
    html! {
        (crumbs(&p.name, None))
        h1 { (p.name) }
        section aria-labelledby="pull-h" {
            h2 id="pull-h" { "Pull" }
            p.cmd { code id="pull-docker" { (p.pull_docker) } (copy_button(&p.pull_docker, "docker pull command")) }
            p.cmd { code id="pull-podman" { (p.pull_podman) } (copy_button(&p.pull_podman, "podman pull command")) }
        }
        section aria-labelledby="tags-h" {
            h2 id="tags-h" { "Tags " span.muted { "(" (p.total_tags) ")" } }
            form.bar method="get" action=(base) data-live="results" {
                label for="filter" { "Filter tags" }
                input id="filter" type="search" name="filter" value=(p.filter) maxlength="128" autocomplete="off" placeholder="tag contains…";
                button type="submit" { "Filter" }
                a href=(format!("{base}/-/compare")) { "Compare two tags" }
            }
            div id="results" {
                @if p.tags.is_empty() {
                    p.empty { "No tags" @if !p.filter.is_empty() { " match “" (p.filter) "”" } "." }
                } @else {
                    div.scroll {
                        table {
                            caption.visually-hidden { "Tags of " (p.name) }
                            thead { tr {
                                th scope="col" { "Tag" } th scope="col" { "Digest" } th scope="col" { "Type" }
                                th scope="col" { "Size" } th scope="col" { "Pushed" } th scope="col" { "Last pull" }
                                @if p.can_delete { th scope="col" { span.visually-hidden { "Actions" } } }
                            } }
                            tbody {
                                @for t in &p.tags {
                                    tr {
                                        th scope="row" { a href=(image_href(&p.name, &t.tag)) { (t.tag) } }
                                        td { code.digest title=(t.digest) { (short_digest(&t.digest)) } " " (copy_button(&t.digest, &format!("digest of {}", t.tag))) }
                                        td { (t.kind) @if !t.platforms.is_empty() { br; span.muted { (t.platforms.join(", ")) } } }
                                        td.num { (human_size(t.size)) }
                                        td { (when(t.pushed.as_deref())) }
                                        td { (when(t.last_pull.as_deref())) }
                                        @if p.can_delete {
                                            td { button.delete type="button" hidden data-repo=(p.name) data-tag=(t.tag) data-digest=(t.digest) { "Delete…" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pages aria-label="Pages" {
                    @if p.has_previous {
                        a href=(format!("{base}?filter={}", enc(&p.filter))) { "First page" }
                    }
                    @if let Some(next) = &p.next {
                        a rel="next" href=(format!("{base}?filter={}&after={}", enc(&p.filter), enc(next))) { "Next page" }
                    }
                }
            }
        }
        @if p.can_delete {
            dialog id="confirm" aria-labelledby="confirm-h" {
                h2 id="confirm-h" { "Delete?" }
                p id="confirm-text" {}
                div.actions {
                    button id="delete-tag" type="button" { "Delete the tag" }
                    button id="delete-manifest" type="button" class="danger" { "Delete the manifest and all its tags" }
                    button id="delete-cancel" type="button" { "Cancel" }
                }
                p id="confirm-error" role="alert" {}
            }
        }
    }
}

fn kv(name: &str, value: Markup) -> Markup {
    html! { dt { (name) } dd { (value) } }
}

fn image(i: &ImagePage) -> Markup {
    let short = short_digest(&i.digest);
    html! {
        (crumbs(&i.repository, Some(&i.reference)))
        h1 { (i.repository) span.muted { "@" (short) } }
        dl.facts {
            (kv("Digest", html! { code { (i.digest) } " " (copy_button(&i.digest, "digest")) }))
            (kv("Kind", html! { (i.kind) }))
            (kv("Media type", html! { code { (i.media_type) } }))
            @if let Some(t) = i.artifact_type.as_deref().filter(|t| !super::data::is_image_config(t)) { (kv("Artifact type", html! { code { (t) } })) }
            (kv("Size", html! { (human_size(i.size)) }))
            @if let Some(s) = &i.subject { (kv("Refers to", html! { a href=(image_href(&i.repository, s)) { code { (short_digest(s)) } } })) }
            (kv("Pull", html! { code { (i.pull) } " " (copy_button(&i.pull, "pull command")) }))
        }
        p { a href=(format!("{}/-/compare?a={}", repo_href(&i.repository), enc(&i.reference))) { "Compare with another tag…" } }
        @if !i.annotations.is_empty() {
            h2 { "Annotations" }
            (map_table("Annotations", i.annotations.iter()))
        }
        @if !i.platforms.is_empty() {
            h2 { "Platforms" }
            div.scroll { table {
                caption.visually-hidden { "Platforms of this index" }
                thead { tr { th scope="col" { "Platform" } th scope="col" { "Digest" } th scope="col" { "Manifest size" } } }
                tbody { @for c in &i.platforms { tr {
                    th scope="row" { (c.platform.as_deref().unwrap_or("unknown")) }
                    td { a href=(image_href(&i.repository, &c.digest)) { code { (short_digest(&c.digest)) } } }
                    td.num { (human_size(c.size)) }
                } } }
            } }
        }
        @if !i.layers.is_empty() {
            h2 { "Layers " span.muted { "(" (i.layers.len()) ")" } }
            div.scroll { table {
                caption.visually-hidden { "Layers" }
                thead { tr { th scope="col" { "#" } th scope="col" { "Digest" } th scope="col" { "Media type" } th scope="col" { "Size" } } }
                tbody { @for (n, l) in i.layers.iter().enumerate() { tr {
                    td.num { (n + 1) }
                    td { code.digest title=(l.digest) { (short_digest(&l.digest)) } }
                    td { code { (l.media_type) } }
                    td.num { (human_size(l.size)) }
                } } }
            } }
        }
        @if let Some(c) = &i.config {
            h2 { "Configuration" }
            dl.facts {
                (kv("Created", when(c.created.as_deref())))
                (kv("Platform", html! { (c.os.as_deref().unwrap_or("?")) "/" (c.architecture.as_deref().unwrap_or("?")) }))
                (kv("Entrypoint", html! { code { (c.entrypoint.join(" ")) } }))
                (kv("Command", html! { code { (c.cmd.join(" ")) } }))
                (kv("Working directory", html! { code { (c.working_dir.as_deref().unwrap_or("")) } }))
                (kv("User", html! { code { (c.user.as_deref().unwrap_or("")) } }))
                (kv("Exposed ports", html! { (c.exposed_ports.join(", ")) }))
            }
            @if !c.env.is_empty() {
                h3 { "Environment" }
                ul.plain { @for e in &c.env { li { code { (e) } } } }
            }
            @if !c.labels.is_empty() {
                h3 { "Labels" }
                (map_table("Labels", c.labels.iter()))
            }
        }
        @if !i.history.is_empty() {
            h2 { "History" }
            ol.history { @for s in &i.history {
                li {
                    code { (s.created_by.as_deref().unwrap_or("")) }
                    @if s.empty_layer { " " span.muted { "(no layer)" } }
                    @if let Some(c) = &s.comment { " " span.muted { (c) } }
                    @if let Some(t) = &s.created { " " (when(Some(t))) }
                }
            } }
        }
        h2 { "Referrers" }
        @if i.referrers.is_empty() {
            p.muted { "No signatures, SBOMs or attestations refer to this manifest." }
        }
        @for g in &i.referrers {
            section.referrers {
                h3 { (g.label) " " span.muted { code { (g.artifact_type) } } }
                ul.plain { @for r in &g.items { li {
                    a href=(image_href(&i.repository, &r.digest)) { code { (short_digest(&r.digest)) } }
                    " " (human_size(r.size))
                    @if !r.annotations.is_empty() { (map_table("Annotations", r.annotations.iter())) }
                } } }
            }
        }
        details { summary { "Raw manifest" } pre { code { (i.manifest_json) } } }
        @if let Some(c) = &i.config_json {
            details { summary { "Raw configuration" } pre { code { (c) } } }
        }
    }
}

fn map_table<'a>(caption: &str, rows: impl Iterator<Item = (&'a String, &'a String)>) -> Markup {
    html! {
        div.scroll { table.kv {
            caption.visually-hidden { (caption) }
            thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
            tbody { @for (k, v) in rows { tr { th scope="row" { code { (k) } } td { (v) } } } }
        } }
    }
}

fn compare_form(repo: &str, a: &str, b: &str, tags: &[String]) -> Markup {
    html! {
        form.bar method="get" action=(format!("{}/-/compare", repo_href(repo))) {
            label for="a" { "From" }
            input id="a" name="a" value=(a) list="tags" required maxlength="200";
            label for="b" { "To" }
            input id="b" name="b" value=(b) list="tags" required maxlength="200";
            button type="submit" { "Compare" }
            datalist id="tags" { @for t in tags { option value=(t) {} } }
        }
    }
}

fn signed(n: i64) -> String {
    let s = human_size(n.unsigned_abs());
    match n.signum() {
        1 => format!("+{s}"),
        -1 => format!("−{s}"),
        _ => s,
    }
}

fn compare(c: &Compare) -> Markup {
    html! {
        (crumbs(&c.repository, Some("Compare")))
        h1 { "Compare" }
        (compare_form(&c.repository, &c.a.reference, &c.b.reference, &[]))
        div.scroll { table id="sides" {
            caption.visually-hidden { "The two images" }
            thead { tr { th scope="col" {} th scope="col" { "From" } th scope="col" { "To" } } }
            tbody {
                tr { th scope="row" { "Reference" } td { (c.a.reference) } td { (c.b.reference) } }
                tr { th scope="row" { "Digest" }
                    td { a href=(image_href(&c.repository, &c.a.digest)) { code { (short_digest(&c.a.digest)) } } }
                    td { a href=(image_href(&c.repository, &c.b.digest)) { code { (short_digest(&c.b.digest)) } } } }
                @if c.a.platform.is_some() || c.b.platform.is_some() {
                    tr { th scope="row" { "Platform" } td { (c.a.platform.as_deref().unwrap_or("")) } td { (c.b.platform.as_deref().unwrap_or("")) } }
                }
                tr { th scope="row" { "Size" } td.num { (human_size(c.a.size)) } td.num { (human_size(c.b.size)) } }
            }
        } }
        p id="delta" { "Size change: " strong { (signed(c.size_delta)) } ". Shared " (human_size(c.shared_bytes))
            ", added " (human_size(c.added_bytes)) ", removed " (human_size(c.removed_bytes)) "." }
        h2 { "Layers" }
        div.scroll { table id="layers" {
            caption.visually-hidden { "Layers shared, added and removed" }
            thead { tr { th scope="col" { "Change" } th scope="col" { "Digest" } th scope="col" { "Size" } } }
            tbody { @for l in &c.layers { tr class=(l.change) {
                td { span.badge { (l.change) } }
                td { code.digest title=(l.digest) { (l.short) } }
                td.num { (human_size(l.size)) }
            } } }
        } }
        h2 { "Configuration differences" }
        @if c.config.is_empty() {
            p.muted { "The configurations agree on every field shown." }
        } @else {
            div.scroll { table id="config-diff" {
                caption.visually-hidden { "Configuration differences" }
                thead { tr { th scope="col" { "Field" } th scope="col" { "From" } th scope="col" { "To" } } }
                tbody { @for f in &c.config { tr {
                    th scope="row" { (f.field) } td { code { (f.a) } } td { code { (f.b) } }
                } } }
            } }
        }
    }
}

fn account(a: &Account, v: &Viewer) -> Markup {
    html! {
        h1 { "Account" }
        @if let Some(user) = &a.user {
            p { "You are " b { (user) } "." }
            p { "Groups: " @if a.groups.is_empty() { span.muted { "none" } } @else { (a.groups.join(", ")) } }
            @if a.session {
                h2 { "API keys" }
                p { "Use a key as the password with your user name: " code { "docker login -u " (user) " --password-stdin" } }
                form id="create" class="bar" {
                    label for="label" { "Label" } input id="label" name="label" required maxlength="100";
                    label for="scopes" { "Scopes" } input id="scopes" name="scopes" placeholder="repository:ci/**:read,create";
                    label for="days" { "Expires in days" } input id="days" name="days" type="number" min="1" max="3650";
                    button type="submit" { "Create key" }
                }
                p id="newkey" aria-live="polite" {}
                div.scroll { table {
                    caption.visually-hidden { "Your API keys" }
                    thead { tr { th scope="col" { "Label" } th scope="col" { "Scopes" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody id="keys" {}
                } }
                noscript { p { "Managing API keys needs JavaScript; the keys API is " code { "/zot/auth/apikey" } "." } }
            }
        } @else {
            p { "You are not logged in. Public repositories can be browsed and pulled anonymously." }
            @let logins = v.logins();
            @if logins.is_empty() {
                p { "Browser login is not configured on this registry." }
            }
            @for (href, name) in logins { p { a.login href=(href) { "Log in with " (name) } } }
        }
    }
}
