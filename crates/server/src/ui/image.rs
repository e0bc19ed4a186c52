//! What the image and compare pages show: an index's platforms, an image's
//! layers, configuration and history, its referrers grouped by artifact
//! type, the raw JSON; and two images side by side. Read from the stored
//! manifests and configs only.

use super::data::{platform_of, short_digest};
use berth_core::{CoreError, Registry};
use berth_oci::manifest::{self, Kind};
use berth_oci::{Digest, Reference, RepoName};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// Configurations larger than this are not read (they are never this big).
const MAX_CONFIG: u64 = 4 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Child {
    pub digest: String,
    pub media_type: String,
    pub platform: Option<String>,
    pub size: u64,
}

/// The parts of an image configuration people look for.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Config {
    pub created: Option<String>,
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub annotations: BTreeMap<String, String>,
}

/// Referrers of one artifact type.
#[derive(Debug, Clone, Serialize)]
pub struct ReferrerGroup {
    pub artifact_type: String,
    /// What the type is: "cosign signature", "SBOM (SPDX)", ...
    pub label: String,
    pub items: Vec<Referrer>,
}

/// The image page (`/ui/r/<name>/-/image/<ref>` and its JSON twin).
#[derive(Debug, Clone, Serialize)]
pub struct ImagePage {
    pub repository: String,
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    /// `image` or `index`.
    pub kind: &'static str,
    pub artifact_type: Option<String>,
    pub size: u64,
    pub subject: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// An index's children.
    pub platforms: Vec<Child>,
    pub layers: Vec<Layer>,
    pub config_digest: Option<String>,
    pub config: Option<Config>,
    pub history: Vec<Step>,
    pub referrers: Vec<ReferrerGroup>,
    pub manifest_json: String,
    pub config_json: Option<String>,
    /// `docker pull <host>/<repository>@<digest>`.
    pub pull: String,
}

/// A person's name for an artifact type.
pub fn artifact_label(t: &str) -> String {
    let known = [
        (
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            "cosign signature",
        ),
        (
            "application/vnd.dev.cosign.simplesigning.v1+json",
            "cosign signature",
        ),
        (
            "application/vnd.cncf.notary.signature",
            "Notation signature",
        ),
        ("application/spdx+json", "SBOM (SPDX)"),
        ("text/spdx", "SBOM (SPDX)"),
        ("application/vnd.cyclonedx+json", "SBOM (CycloneDX)"),
        ("application/vnd.cyclonedx+xml", "SBOM (CycloneDX)"),
        ("application/vnd.in-toto+json", "attestation (in-toto)"),
        (
            "application/vnd.dsse.envelope.v1+json",
            "attestation (DSSE)",
        ),
        (
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            "Sigstore bundle",
        ),
    ];
    known
        .iter()
        .find(|(k, _)| *k == t)
        .map_or_else(|| "artifact".to_owned(), |(_, l)| (*l).to_owned())
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Reads the fields of a configuration document.
pub fn parse_config(v: &Value) -> Config {
    let c = v.get("config");
    let get = |k: &str| c.and_then(|c| c.get(k));
    Config {
        created: text(v.get("created")),
        os: text(v.get("os")),
        architecture: text(v.get("architecture")).map(|a| {
            match v.get("variant").and_then(|x| x.as_str()) {
                Some(var) => format!("{a}/{var}"),
                None => a,
            }
        }),
        entrypoint: strings(get("Entrypoint")),
        cmd: strings(get("Cmd")),
        working_dir: text(get("WorkingDir")),
        user: text(get("User")),
        exposed_ports: get("ExposedPorts")
            .and_then(|p| p.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
        env: strings(get("Env")),
        labels: get("Labels")
            .and_then(|l| l.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn history(v: &Value) -> Vec<Step> {
    v.get("history")
        .and_then(|h| h.as_array())
        .map(|a| {
            a.iter()
                .map(|s| Step {
                    created: text(s.get("created")),
                    created_by: text(s.get("created_by")),
                    comment: text(s.get("comment")),
                    empty_layer: s
                        .get("empty_layer")
                        .and_then(|e| e.as_bool())
                        .unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn layers_of(raw: &Value) -> Vec<Layer> {
    raw.get("layers")
        .and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .map(|l| Layer {
                    media_type: text(l.get("mediaType")).unwrap_or_default(),
                    digest: text(l.get("digest")).unwrap_or_default(),
                    size: l.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Most bytes of pretty-printed JSON a page shows: indenting a document
/// of deeply nested arrays can make it a hundred times larger.
const MAX_PRETTY: usize = 1024 * 1024;

/// A writer that refuses to grow past [`MAX_PRETTY`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_PRETTY {
            return Err(std::io::Error::other("too long to show"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A document pretty-printed, or as stored (cut to [`MAX_PRETTY`]) when it
/// is no JSON or would be too long indented.
pub(crate) fn pretty(body: &[u8]) -> String {
    let mut out = Capped(Vec::new());
    let printed = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_writer_pretty(&mut out, &v).ok());
    if printed.is_some() {
        return String::from_utf8_lossy(&out.0).into_owned();
    }
    let shown = &body[..body.len().min(MAX_PRETTY)];
    let mut s = String::from_utf8_lossy(shown).into_owned();
    if shown.len() < body.len() {
        s.push_str("\n… (cut: the whole document is in the registry's /v2 API)");
    }
    s
}

/// Gathers the image page.
pub async fn image_page(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    host: &str,
) -> Result<ImagePage, CoreError> {
    let stored = reg.peek_manifest(repo, reference).await?;
    let m = manifest::parse(&stored.body, None)
        .map_err(|e| CoreError::ManifestInvalid(e.to_string()))?;
    let raw: Value = serde_json::from_slice(&stored.body).unwrap_or(Value::Null);
    let mut page = ImagePage {
        repository: repo.to_string(),
        reference: reference.to_string(),
        digest: stored.digest.to_string(),
        media_type: stored.media_type.clone(),
        kind: if m.kind == Kind::Index {
            "index"
        } else {
            "image"
        },
        artifact_type: m.artifact_type.clone(),
        size: 0,
        subject: m.subject.as_ref().map(|s| s.digest.to_string()),
        annotations: m.annotations.clone().unwrap_or_default(),
        platforms: Vec::new(),
        layers: Vec::new(),
        config_digest: None,
        config: None,
        history: Vec::new(),
        referrers: Vec::new(),
        manifest_json: pretty(&stored.body),
        config_json: None,
        pull: format!("docker pull {host}/{repo}@{}", stored.digest),
    };
    if m.kind == Kind::Index {
        page.platforms = m
            .manifests
            .iter()
            .map(|d| Child {
                digest: d.digest.to_string(),
                media_type: d.media_type.clone(),
                platform: platform_of(d.platform.as_ref()),
                size: d.size,
            })
            .collect();
        page.size = super::data::total(page.platforms.iter().map(|c| c.size));
    } else {
        let config = raw.get("config").and_then(|c| c.get("digest"));
        let config_digest: Option<Digest> = config.and_then(|d| d.as_str()?.parse().ok());
        page.layers = layers_of(&raw);
        page.size = super::data::total(m.blobs.iter().map(|b| b.size));
        if let Some(cd) = config_digest {
            page.config_digest = Some(cd.to_string());
            if let Some(body) = reg.small_blob(repo, &cd, MAX_CONFIG).await? {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    if v.get("config").is_some() || v.get("rootfs").is_some() {
                        page.config = Some(parse_config(&v));
                        page.history = history(&v);
                    }
                }
                page.config_json = Some(pretty(&body));
            }
        }
    }
    page.referrers = referrer_groups(reg, repo, &stored.digest).await?;
    Ok(page)
}

/// Referrers an image page lists.
const REFERRERS_SHOWN: usize = 1000;

async fn referrer_groups(
    reg: &Registry,
    repo: &RepoName,
    subject: &Digest,
) -> Result<Vec<ReferrerGroup>, CoreError> {
    let mut groups: BTreeMap<String, Vec<Referrer>> = BTreeMap::new();
    // The page shows at most this many; more is for the API's pages.
    let (referrers, _) = reg
        .referrers(repo, subject, None, None, REFERRERS_SHOWN)
        .await?;
    for d in referrers {
        let t = d.artifact_type.clone().unwrap_or_else(|| "unknown".into());
        groups.entry(t).or_default().push(Referrer {
            digest: d.digest.to_string(),
            media_type: d.media_type.clone(),
            size: d.size,
            annotations: d.annotations.clone().unwrap_or_default(),
        });
    }
    Ok(groups
        .into_iter()
        .map(|(t, items)| ReferrerGroup {
            label: artifact_label(&t),
            artifact_type: t,
            items,
        })
        .collect())
}

/// One side of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub reference: String,
    pub digest: String,
    /// When the reference is an index: the platform compared.
    pub platform: Option<String>,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerDiff {
    pub digest: String,
    pub short: String,
    pub size: u64,
    /// `shared`, `removed` (only in a) or `added` (only in b).
    pub change: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldDiff {
    pub field: String,
    pub a: String,
    pub b: String,
}

/// The compare page (`/ui/r/<name>/-/compare?a=..&b=..` and its twin).
#[derive(Debug, Clone, Serialize)]
pub struct Compare {
    pub repository: String,
    pub a: Side,
    pub b: Side,
    pub layers: Vec<LayerDiff>,
    pub shared_bytes: u64,
    pub added_bytes: u64,
    pub removed_bytes: u64,
    /// b's size minus a's.
    pub size_delta: i64,
    pub config: Vec<FieldDiff>,
}

/// An image (an index resolves to the child for `platform`, or its first).
async fn resolve_image(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    platform: Option<&str>,
) -> Result<(Side, Vec<Layer>, Config), CoreError> {
    let mut stored = reg.peek_manifest(repo, reference).await?;
    let mut m = manifest::parse(&stored.body, None)
        .map_err(|e| CoreError::ManifestInvalid(e.to_string()))?;
    let mut chosen = None;
    if m.kind == Kind::Index {
        let child = m
            .manifests
            .iter()
            .find(|d| platform.is_some() && platform_of(d.platform.as_ref()).as_deref() == platform)
            .or_else(|| m.manifests.first())
            .ok_or(CoreError::ManifestUnknown)?
            .clone();
        chosen = platform_of(child.platform.as_ref());
        stored = reg
            .peek_manifest(repo, &Reference::Digest(child.digest.clone()))
            .await?;
        m = manifest::parse(&stored.body, None)
            .map_err(|e| CoreError::ManifestInvalid(e.to_string()))?;
    }
    let raw: Value = serde_json::from_slice(&stored.body).unwrap_or(Value::Null);
    let layers = layers_of(&raw);
    let config_digest: Option<Digest> = raw
        .get("config")
        .and_then(|c| c.get("digest"))
        .and_then(|d| d.as_str()?.parse().ok());
    let config = match config_digest {
        Some(cd) => reg
            .small_blob(repo, &cd, MAX_CONFIG)
            .await?
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| parse_config(&v))
            .unwrap_or_default(),
        None => Config::default(),
    };
    let side = Side {
        reference: reference.to_string(),
        digest: stored.digest.to_string(),
        platform: chosen,
        size: super::data::total(m.blobs.iter().map(|b| b.size)),
    };
    Ok((side, layers, config))
}

fn joined(v: &[String]) -> String {
    v.join(" ")
}

fn config_diff(a: &Config, b: &Config) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            out.push(FieldDiff {
                field: name.to_owned(),
                a: x,
                b: y,
            });
        }
    };
    let o = |s: &Option<String>| s.clone().unwrap_or_default();
    field("created", o(&a.created), o(&b.created));
    field("os", o(&a.os), o(&b.os));
    field("architecture", o(&a.architecture), o(&b.architecture));
    field("entrypoint", joined(&a.entrypoint), joined(&b.entrypoint));
    field("cmd", joined(&a.cmd), joined(&b.cmd));
    field("working directory", o(&a.working_dir), o(&b.working_dir));
    field("user", o(&a.user), o(&b.user));
    field(
        "exposed ports",
        joined(&a.exposed_ports),
        joined(&b.exposed_ports),
    );
    let env = |c: &Config| -> BTreeMap<String, String> {
        c.env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (e.clone(), String::new()),
            })
            .collect()
    };
    let (ea, eb) = (env(a), env(b));
    let keys: std::collections::BTreeSet<&String> = ea.keys().chain(eb.keys()).collect();
    for k in keys {
        field(
            &format!("env {k}"),
            ea.get(k).cloned().unwrap_or_default(),
            eb.get(k).cloned().unwrap_or_default(),
        );
    }
    let keys: std::collections::BTreeSet<&String> =
        a.labels.keys().chain(b.labels.keys()).collect();
    for k in keys {
        field(
            &format!("label {k}"),
            a.labels.get(k).cloned().unwrap_or_default(),
            b.labels.get(k).cloned().unwrap_or_default(),
        );
    }
    out
}

/// Compares two references of one repository.
pub async fn compare(
    reg: &Registry,
    repo: &RepoName,
    a: &Reference,
    b: &Reference,
    platform: Option<&str>,
) -> Result<Compare, CoreError> {
    let (sa, la, ca) = resolve_image(reg, repo, a, platform).await?;
    let (sb, lb, cb) = resolve_image(reg, repo, b, platform).await?;
    let in_a: HashSet<&str> = la.iter().map(|l| l.digest.as_str()).collect();
    let in_b: HashSet<&str> = lb.iter().map(|l| l.digest.as_str()).collect();
    let mut layers = Vec::new();
    let (mut shared, mut added, mut removed) = (0, 0, 0);
    for l in &la {
        let change = if in_b.contains(l.digest.as_str()) {
            shared += l.size;
            "shared"
        } else {
            removed += l.size;
            "removed"
        };
        layers.push(LayerDiff {
            short: short_digest(&l.digest),
            digest: l.digest.clone(),
            size: l.size,
            change,
        });
    }
    for l in lb.iter().filter(|l| !in_a.contains(l.digest.as_str())) {
        added += l.size;
        layers.push(LayerDiff {
            short: short_digest(&l.digest),
            digest: l.digest.clone(),
            size: l.size,
            change: "added",
        });
    }
    let config = config_diff(&ca, &cb);
    Ok(Compare {
        repository: repo.to_string(),
        size_delta: (i128::from(sb.size) - i128::from(sa.size))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
        a: sa,
        b: sb,
        layers,
        shared_bytes: shared,
        added_bytes: added,
        removed_bytes: removed,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_printing_is_bounded() {
        // 120 nested arrays around 200,000 zeros: 0.4 MB stored, tens of MB
        // once every zero is indented on a line of its own.
        let mut doc = "[".repeat(120);
        doc.push_str(&vec!["0"; 200_000].join(","));
        doc.push_str(&"]".repeat(120));
        let shown = pretty(doc.as_bytes());
        assert!(shown.len() <= MAX_PRETTY + 100, "{} bytes", shown.len());
        assert!(shown.starts_with("[[[["));
        let small = pretty(br#"{"a":[1,2]}"#);
        assert_eq!(small, "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
        // A document cut to the bound says so.
        let big = vec![b'x'; MAX_PRETTY + 10];
        assert!(pretty(&big).ends_with("/v2 API)"));
    }

    #[test]
    fn configurations_differ_field_by_field() {
        let a = parse_config(&serde_json::json!({"os":"linux","architecture":"amd64",
            "config":{"Env":["A=1","GONE=x"],"Cmd":"sh","Labels":{"l":"1"}}}));
        let b = parse_config(
            &serde_json::json!({"os":"linux","architecture":"arm64","variant":"v8",
            "config":{"Env":["A=1","NEW=y"],"Cmd":["sh"],"Labels":{"l":"2"}}}),
        );
        assert_eq!(a.cmd, ["sh"]);
        let d: Vec<(String, String, String)> = config_diff(&a, &b)
            .into_iter()
            .map(|f| (f.field, f.a, f.b))
            .collect();
        let s = |x: &str| x.to_owned();
        assert_eq!(
            d,
            [
                (s("architecture"), s("amd64"), s("arm64/v8")),
                (s("env GONE"), s("x"), s("")),
                (s("env NEW"), s(""), s("y")),
                (s("label l"), s("1"), s("2")),
            ]
        );
        assert_eq!(
            artifact_label("application/vnd.cncf.notary.signature"),
            "Notation signature"
        );
        assert_eq!(artifact_label("application/x-unknown"), "artifact");
    }
}
