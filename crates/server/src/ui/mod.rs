//! The web interface: server-rendered pages (maud templates compiled into
//! the binary) and their JSON twins under `/ui/api/`, built from the same
//! structs. It reads only what the registry stores, and shows a repository
//! only to a caller the access policy lets read it: the same
//! `Policy::decide` the `/v2` API and `_catalog` use, anonymous callers
//! included. A repository the caller may not read answers exactly like one
//! that does not exist.
//!
//! Routes (HTML, then its JSON twin):
//! - `/` and `/ui/api/repositories`: the repository list (`q`, `sort`,
//!   `after`, `n`);
//! - `/ui/r/<name>` and `/ui/api/r/<name>`: a repository's tags (`filter`,
//!   `after`, `n`);
//! - `/ui/r/<name>/-/image/<reference>` and `/ui/api/r/<name>/-/image/<reference>`;
//! - `/ui/r/<name>/-/compare?a=&b=[&platform=]` and its twin;
//! - `/ui/account` and `/ui/api/account`;
//! - `/ui/app.js` and `/ui/style.css`, the only script and style sheet.
//!
//! Writes (tag and manifest deletes, API keys) are not here: the page's
//! script sends them to `/v2` and `/zot/auth/apikey` with the session cookie
//! and `X-Berth-Request`, where the one authorization point decides.

mod assets;
pub mod data;
pub mod image;
mod pages;

pub use assets::{script, style};
pub use data::UiCache;

use crate::app::App;
use crate::auth::Auth;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_auth::policy::{Action, Identity, Method};
use berth_core::CoreError;
use berth_oci::{Reference, RepoName};
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// The policy every page is served with: nothing inline, nothing from
/// elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Who is looking, and what the policy in force lets them do.
pub struct Viewer {
    pub who: Identity,
    auth: Arc<Auth>,
}

impl Viewer {
    /// Whether the policy lets the viewer do `action` on `repo`.
    pub fn may(&self, action: Action, repo: &str) -> bool {
        self.auth.policy.decide(&self.who, action, repo).allowed
    }

    pub fn user(&self) -> Option<&str> {
        self.who.user.as_deref()
    }

    /// Logged in through the browser (so "Log out" means something).
    pub fn has_session(&self) -> bool {
        self.who.method == Method::Session
    }

    /// `(href, provider name)` for each configured OpenID provider.
    pub fn logins(&self) -> Vec<(String, String)> {
        self.auth.oidc.as_ref().map_or_else(Vec::new, |oidc| {
            oidc.providers
                .iter()
                .map(|(key, p)| {
                    let k: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
                    (
                        format!("/zot/auth/login?provider={k}&callback_ui=/"),
                        p.display_name.clone(),
                    )
                })
                .collect()
        })
    }
}

async fn viewer(app: &App, req: &Parts) -> Result<Viewer, Response> {
    let auth = crate::app::in_force(&req.extensions, app);
    if auth.fail_closed {
        return Err(auth
            .unauthorized("the configured authentication method is not supported by this build")
            .into_response());
    }
    let who = auth
        .identify(&http::Method::GET, &req.headers)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Viewer { who, auth })
}

/// What one page shows; serialized whole for the JSON twin.
#[derive(Serialize)]
#[serde(untagged)]
pub enum View {
    Repos(data::RepoList),
    Repo(data::RepoPage),
    Image(Box<image::ImagePage>),
    Compare(Box<image::Compare>),
    /// The compare form before two references are chosen.
    ComparePick {
        repository: String,
        tags: Vec<String>,
    },
    Account(pages::Account),
}

fn query(req: &Parts) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn per_page(q: &HashMap<String, String>, default: usize, max: usize) -> usize {
    q.get("n")
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(default, |n| n.clamp(1, max))
}

/// A page cursor: a repository name or tag, so as long as the longest
/// one (a shorter cut would repeat or skip rows).
fn cursor(q: &HashMap<String, String>) -> Option<String> {
    q.get("after")
        .map(|a| a.trim().chars().take(MAX_CURSOR).collect::<String>())
        .filter(|a| !a.is_empty())
}

/// Longest repository name the grammar allows (tags are shorter).
const MAX_CURSOR: usize = 255;

/// The host pull commands name: `http.externalUrl`'s host (and port) when
/// set, else the Host the request came to.
fn pull_host(app: &App, headers: &HeaderMap) -> String {
    if let Some(url) = app.settings.external_url.as_deref() {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        return rest.split('/').next().unwrap_or(rest).to_owned();
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.len() <= 255)
        .unwrap_or("localhost")
        .to_owned()
}

fn not_found(json: bool) -> Response {
    if json {
        let mut r = (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        secure(r)
    } else {
        html(StatusCode::NOT_FOUND, pages::not_found().into_string())
    }
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(r)
}

fn respond(viewer: &Viewer, view: View, json: bool) -> Response {
    if json {
        let body = serde_json::to_vec(&view).unwrap_or_default();
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return secure(r);
    }
    html(StatusCode::OK, pages::render(viewer, &view).into_string())
}

fn is_missing(e: &CoreError) -> bool {
    matches!(
        e,
        CoreError::NameUnknown | CoreError::ManifestUnknown | CoreError::BlobUnknown
    )
}

fn failed(e: CoreError, json: bool) -> Response {
    if is_missing(&e) {
        return not_found(json);
    }
    crate::error::ApiError::from(e).into_response()
}

/// `GET /`: the repository list.
pub async fn index(State(app): State<App>, req: Request) -> Response {
    repositories(app, req, false).await
}

/// `GET /ui/api/repositories`.
pub async fn repositories_json(State(app): State<App>, req: Request) -> Response {
    repositories(app, req, true).await
}

async fn repositories(app: App, req: Request, json: bool) -> Response {
    let req = req.into_parts().0;
    let v = match viewer(&app, &req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = query(&req);
    let search = q.get("q").map(|s| data::bounded(s)).unwrap_or_default();
    let descending = q.get("sort").is_some_and(|s| s == "-name");
    let n = per_page(&q, data::REPOS_PER_PAGE, data::MAX_REPOS_PER_PAGE);
    let after = cursor(&q);
    match data::repo_list(
        &app.registry,
        &app.ui_cache,
        &search,
        descending,
        after.as_deref(),
        n,
        |repo| v.may(Action::Read, repo),
    )
    .await
    {
        Ok(list) => respond(&v, View::Repos(list), json),
        Err(e) => failed(e, json),
    }
}

/// `GET /ui/account`.
pub async fn account(State(app): State<App>, req: Request) -> Response {
    account_view(app, req, false).await
}

/// `GET /ui/api/account`.
pub async fn account_json(State(app): State<App>, req: Request) -> Response {
    account_view(app, req, true).await
}

async fn account_view(app: App, req: Request, json: bool) -> Response {
    let req = req.into_parts().0;
    let v = match viewer(&app, &req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let a = pages::Account {
        user: v.user().map(str::to_owned),
        groups: v.who.groups.clone(),
        session: v.has_session(),
        logins: v.logins().into_iter().map(|(href, _)| href).collect(),
    };
    respond(&v, View::Account(a), json)
}

/// `GET /ui/r/<name>[/-/...]`.
pub async fn repository(State(app): State<App>, req: Request) -> Response {
    repository_view(app, req, false).await
}

/// `GET /ui/api/r/<name>[/-/...]`.
pub async fn repository_json(State(app): State<App>, req: Request) -> Response {
    repository_view(app, req, true).await
}

/// What a `/ui/r/` path names. `/-/` cannot occur in a repository name
/// (a component never is `-` alone), so it separates name from view.
enum Target {
    Tags,
    Image(String),
    Compare,
}

fn parse_target(rest: &str) -> Option<(RepoName, Target)> {
    let (name, view) = match rest.split_once("/-/") {
        Some((n, v)) => (n, Some(v)),
        None => (rest.trim_end_matches('/'), None),
    };
    let repo = RepoName::parse(name)?;
    let target = match view {
        None => Target::Tags,
        Some("compare") => Target::Compare,
        Some(v) => Target::Image(v.strip_prefix("image/")?.to_owned()),
    };
    Some((repo, target))
}

async fn repository_view(app: App, req: Request, json: bool) -> Response {
    let req = req.into_parts().0;
    let v = match viewer(&app, &req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let prefix = if json { "/ui/api/r/" } else { "/ui/r/" };
    let rest = req.uri.path().strip_prefix(prefix).unwrap_or_default();
    let Some((repo, target)) = parse_target(rest) else {
        return not_found(json);
    };
    // The one decision: unreadable is indistinguishable from absent.
    if !v.may(Action::Read, repo.as_str()) {
        return not_found(json);
    }
    let q = query(&req);
    let reg = &app.registry;
    let view = match target {
        Target::Tags => {
            let filter = q
                .get("filter")
                .map(|s| data::bounded(s))
                .unwrap_or_default();
            let after = cursor(&q);
            let host = pull_host(&app, &req.headers);
            let tq = data::TagQuery {
                filter: &filter,
                after: after.as_deref(),
                per_page: per_page(&q, data::TAGS_PER_PAGE, data::MAX_TAGS_PER_PAGE),
            };
            let can_delete = v.may(Action::Delete, repo.as_str());
            data::repo_page(reg, &app.ui_cache, &repo, &host, tq, can_delete)
                .await
                .map(View::Repo)
        }
        Target::Image(r) => match Reference::parse(&r) {
            Ok(reference) => {
                image::image_page(reg, &repo, &reference, &pull_host(&app, &req.headers))
                    .await
                    .map(|p| View::Image(Box::new(p)))
            }
            Err(_) => return not_found(json),
        },
        Target::Compare => {
            let refs = (
                q.get("a").map(|s| Reference::parse(s.trim())),
                q.get("b").map(|s| Reference::parse(s.trim())),
            );
            match refs {
                (Some(Ok(a)), Some(Ok(b))) => {
                    let platform = q.get("platform").map(|p| data::bounded(p));
                    image::compare(
                        reg,
                        &repo,
                        &a,
                        &b,
                        platform.as_deref().filter(|p| !p.is_empty()),
                    )
                    .await
                    .map(|c| View::Compare(Box::new(c)))
                }
                (None, _) | (_, None) => reg.tag_names(&repo).await.map(|mut tags| {
                    tags.truncate(data::MAX_TAGS_PER_PAGE);
                    View::ComparePick {
                        repository: repo.to_string(),
                        tags,
                    }
                }),
                _ => return not_found(json),
            }
        }
    };
    match view {
        Ok(view) => respond(&v, view, json),
        Err(e) => failed(e, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_keeps_the_longest_repository_name_whole() {
        let long = format!("{}/{}", "a".repeat(127), "b".repeat(127));
        let q: HashMap<String, String> = [("after".to_owned(), long.clone())].into();
        assert_eq!(cursor(&q), Some(long));
        let q: HashMap<String, String> = [("after".to_owned(), "x".repeat(10_000))].into();
        assert_eq!(cursor(&q).map(|c| c.len()), Some(MAX_CURSOR));
    }

    #[test]
    fn paths_name_a_repository_and_a_view() {
        let name = |p: &str| parse_target(p).map(|(r, _)| r.to_string());
        assert_eq!(name("a/b/c").as_deref(), Some("a/b/c"));
        assert_eq!(name("a/b/").as_deref(), Some("a/b"));
        assert!(matches!(
            parse_target("a/b/-/compare"),
            Some((_, Target::Compare))
        ));
        match parse_target("a/b/-/image/sha256:00") {
            Some((r, Target::Image(x))) => {
                assert_eq!((r.as_str(), x.as_str()), ("a/b", "sha256:00"))
            }
            _ => panic!("image"),
        }
        // `/-/` always starts a view (`-` alone is never a name
        // component); unknown views are absent.
        assert!(parse_target("a/-/b").is_none());
        assert!(parse_target("a/b/-/other").is_none());
        assert!(parse_target("A/b").is_none());
        assert!(parse_target("").is_none());
    }
}
