//! Configuration: zot's `config.json`, read unchanged.
//!
//! [`load`] reads a file, lower-cases every key (zot's loader does the same,
//! which makes key matching case-insensitive), and deserializes it into the
//! typed [`Config`], refusing unknown keys with their full path.
//! [`Settings::resolve`] then checks values and turns the parts this build
//! acts on into ready-to-use settings, listing the parts it accepts but does
//! not act on yet so the operator is told at start-up.

pub mod check;
pub mod duration;
pub mod keys;
#[cfg(test)]
mod trace;
pub mod types;

pub use keys::inactive_features;
pub mod shared;

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use types::Config;

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: only JSON configuration files are supported by this build")]
    Format { path: String },
    #[error("{path}: {key}: {message}")]
    Key {
        path: String,
        key: String,
        message: String,
    },
}

/// Lower-cases every object key, refusing two keys that differ only in case.
fn normalize(value: Value, at: &str) -> Result<Value, (String, String)> {
    Ok(match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let lower = k.to_lowercase();
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let v = normalize(v, &here)?;
                if out.insert(lower, v).is_some() {
                    return Err((here, "key given twice (keys are case-insensitive)".into()));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| normalize(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        v => v,
    })
}

/// Parses configuration text (JSON). `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let key_err = |key: String, message: String| ConfigError::Key {
        path: origin.to_owned(),
        key,
        message,
    };
    let raw: Value =
        serde_json::from_str(text).map_err(|e| key_err("(syntax)".into(), e.to_string()))?;
    if raw.as_object().is_none_or(|m| m.is_empty()) {
        return Err(key_err(
            "(root)".into(),
            "configuration must be a non-empty JSON object".into(),
        ));
    }
    let value = normalize(raw, "").map_err(|(k, m)| key_err(k, m))?;
    let mut config: Config = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { "(root)".to_owned() } else { key };
        key_err(key, e.into_inner().to_string())
    })?;
    config.raw = value;
    Ok(config)
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if matches!(ext.as_str(), "yaml" | "yml" | "toml" | "hcl" | "ini") {
        return Err(ConfigError::Format { path: shown });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

/// TLS material for the listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// Garbage collection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSettings {
    pub delay: std::time::Duration,
    pub interval: std::time::Duration,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            delay: std::time::Duration::from_secs(3600),
            interval: std::time::Duration::from_secs(3600),
        }
    }
}

/// What this build acts on, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: String,
    pub port: u16,
    pub root_directory: PathBuf,
    /// fsync blob data before it becomes visible (`storage.commit`).
    pub commit: bool,
    pub realm: String,
    pub tls: Option<TlsFiles>,
    pub log_level: String,
    pub log_output: Option<PathBuf>,
    /// Garbage collection: `storage.gc` (zot's default: on), the grace delay
    /// (`gcDelay`) and how often it runs (`gcInterval`, 0 = never by itself).
    pub gc: Option<GcSettings>,
    /// `storage.retention` (applied by each GC pass; without it, untagged
    /// manifests older than a day go, as in zot).
    pub retention: Arc<berth_core::retention::Retention>,
    /// `extensions.sync`, checked (patterns, URLs), if enabled; its files
    /// (credentials, CA certificates) are read by [`build_sync`].
    pub sync: Option<types::Sync>,
    /// `extensions.scrub`: how often to re-hash stored content.
    pub scrub_interval: Option<std::time::Duration>,
    /// `log.audit`: the audit trail's file.
    pub audit_path: Option<PathBuf>,
    /// The file this came from (for live reload); `None` for the default.
    pub config_path: Option<PathBuf>,
    /// Where Prometheus metrics are served (`extensions.metrics`), if at all.
    pub metrics_path: Option<String>,
    /// `http.externalUrl`: the public base URL (OpenID redirects).
    pub external_url: Option<String>,
    /// `http.auth`, as configured.
    pub auth: Option<types::Auth>,
    /// `http.accessControl`, as configured (already checked).
    pub access_control: Option<types::AccessControl>,
    /// Only authentication methods this build cannot check (LDAP, bearer
    /// tokens) are configured: every registry request is refused rather
    /// than served openly.
    pub auth_unsupported: bool,
    /// Configured features this build accepts but does not act on yet.
    pub inactive: Vec<String>,
    /// The store replicas share (`storage.storageDriver` S3 with
    /// `storage.cacheDriver` postgres), or `None` for `rootDirectory`.
    pub shared: Option<shared::SharedStore>,
    /// `http.ratelimit`, checked.
    pub ratelimit: crate::ratelimit::RateLimits,
    /// `http.readTimeout` (zot's default, 60 s, when unset; `0`: none): the
    /// window in which a request body must keep moving, and the most a
    /// request head may take (see `crate::connection::Limits`).
    pub read_timeout: Option<std::time::Duration>,
    /// `http.writeTimeout` (60 s when unset; `0`: none): the window in which
    /// a stalled response write must keep moving.
    pub write_timeout: Option<std::time::Duration>,
}

/// zot's default `http.readTimeout` and `http.writeTimeout`.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// An I/O timeout: unset is the default, zero is none.
fn io_timeout(d: Option<duration::GoDuration>) -> Option<std::time::Duration> {
    d.map_or(Some(IO_TIMEOUT), |d| (!d.0.is_zero()).then_some(d.0))
}

const LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic",
];

impl Settings {
    /// The embedded default: loopback, `./data`, open (it listens on
    /// loopback only), logs at info.
    pub fn embedded() -> Settings {
        Settings {
            address: "127.0.0.1".into(),
            port: 5000,
            root_directory: PathBuf::from("data"),
            commit: true,
            realm: "berth".into(),
            tls: None,
            log_level: "info".into(),
            log_output: None,
            gc: Some(GcSettings::default()),
            retention: Arc::default(),
            sync: None,
            scrub_interval: None,
            audit_path: None,
            config_path: None,
            metrics_path: None,
            external_url: None,
            auth: None,
            access_control: None,
            auth_unsupported: false,
            inactive: Vec::new(),
            shared: None,
            ratelimit: Default::default(),
            read_timeout: Some(IO_TIMEOUT),
            write_timeout: Some(IO_TIMEOUT),
        }
    }

    /// Checks a parsed configuration and resolves what this build uses.
    pub fn resolve(c: &Config, origin: &str) -> Result<Settings, ConfigError> {
        let err = |key: &str, message: String| ConfigError::Key {
            path: origin.to_owned(),
            key: key.to_owned(),
            message,
        };
        let port = match c.http.port.as_deref() {
            None => 8080,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .map_err(|_| err("http.port", format!("invalid port {p:?}")))?,
        };
        let root = c
            .storage
            .root_directory
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| err("storage.rootDirectory", "is required".into()))?;
        let mut inactive = inactive_features(c);
        let shared = shared::resolve(
            c.storage.storage_driver.as_ref(),
            c.storage.cache_driver.as_ref(),
            &mut inactive,
        )
        .map_err(|(k, m)| err(&k, m))?;
        let tls = match &c.http.tls {
            None => None,
            Some(t) => match (&t.cert, &t.key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.into(),
                    key: key.into(),
                    client_ca: t.cacert.as_ref().map(PathBuf::from),
                }),
                _ => return Err(err("http.tls", "both cert and key are required".into())),
            },
        };
        let log_level = c
            .log
            .level
            .clone()
            .unwrap_or_else(|| "debug".into())
            .to_ascii_lowercase();
        if !LOG_LEVELS.contains(&log_level.as_str()) {
            return Err(err("log.level", format!("unknown level {log_level:?}")));
        }
        if let Some(ac) = &c.http.access_control {
            berth_auth::Policy::new(&crate::auth::policy_spec(ac)).map_err(|e| match e {
                berth_auth::policy::PolicyError::Actions { at, message } => {
                    err(&format!("http.accessControl.{at}"), message)
                }
                other => err("http.accessControl.repositories", other.to_string()),
            })?;
        }
        for (i, v) in c.http.compat.iter().enumerate() {
            if v != "docker2s2" {
                return Err(err(
                    &format!("http.compat[{i}]"),
                    format!("unknown value {v:?} (zot knows only \"docker2s2\")"),
                ));
            }
        }
        let auth_unsupported = c.http.auth.as_ref().is_some_and(|a| {
            let supported = a.htpasswd.as_ref().is_some_and(|h| h.path.is_some())
                || a.apikey == Some(true)
                || a.openid.is_some();
            !supported && (a.ldap.is_some() || a.bearer.is_some())
        });
        Ok(Settings {
            address: c.http.address.clone().unwrap_or_else(|| "127.0.0.1".into()),
            port,
            root_directory: root.into(),
            // Durable by default; zot's `commit: false` is honoured when written.
            commit: c.storage.commit.unwrap_or(true),
            realm: c.http.realm.clone().unwrap_or_else(|| "berth".into()),
            tls,
            log_level,
            log_output: c.log.output.as_ref().map(PathBuf::from),
            gc: (c.storage.gc != Some(false)).then(|| GcSettings {
                delay: c
                    .storage
                    .gc_delay
                    .map_or(GcSettings::default().delay, |d| d.0),
                interval: c
                    .storage
                    .gc_interval
                    .map_or(GcSettings::default().interval, |d| d.0),
            }),
            retention: Arc::new(
                retention(c.storage.retention.as_ref()).map_err(|(k, m)| err(&k, m))?,
            ),
            sync: {
                let s = c.extensions.as_ref().and_then(|e| e.sync.as_ref());
                sync(s, false).map_err(|(k, m)| err(&k, m))?;
                s.filter(|s| s.enable != Some(false)).cloned()
            },
            scrub_interval: c
                .extensions
                .as_ref()
                .and_then(|e| e.scrub.as_ref())
                .filter(|s| s.enable != Some(false))
                .map(|s| {
                    s.interval
                        .map_or(std::time::Duration::from_secs(24 * 3600), |d| {
                            d.0.max(std::time::Duration::from_secs(60))
                        })
                }),
            audit_path: c.log.audit.as_ref().map(PathBuf::from),
            config_path: None,
            metrics_path: metrics_path(c)
                .map_err(|m| err("extensions.metrics.prometheus.path", m))?,
            external_url: c.http.external_url.clone(),
            auth: c.http.auth.clone(),
            access_control: c.http.access_control.clone(),
            auth_unsupported,
            inactive,
            shared,
            ratelimit: ratelimit(c.http.ratelimit.as_ref()).map_err(|(k, m)| err(&k, m))?,
            read_timeout: io_timeout(c.http.read_timeout),
            write_timeout: io_timeout(c.http.write_timeout),
        })
    }
}

/// Reads, checks and resolves a configuration file, remembering its path.
pub fn settings_from(path: &Path) -> Result<Settings, ConfigError> {
    let parsed = load(path)?;
    let mut s = Settings::resolve(&parsed, &path.display().to_string())?;
    s.config_path = Some(path.to_owned());
    Ok(s)
}

/// The pull-through cache and mirroring a configuration asks for, with
/// its credentials file and CA certificates read.
pub fn build_sync(s: &Settings) -> Result<Option<Arc<berth_core::sync::Sync>>, ConfigError> {
    sync(s.sync.as_ref(), true).map_err(|(key, message)| ConfigError::Key {
        path: s
            .config_path
            .as_ref()
            .map_or("embedded default".into(), |p| p.display().to_string()),
        key,
        message,
    })
}

/// `extensions.sync`, checked. Only with `build` are its files read and
/// its upstream clients made (loading the system's CA store each time),
/// so that resolving a configuration stays cheap.
fn sync(
    s: Option<&types::Sync>,
    build: bool,
) -> Result<Option<Arc<berth_core::sync::Sync>>, (String, String)> {
    use berth_core::sync::content::{ContentRule, TagFilter};
    use berth_core::sync::upstream::Upstream;
    use berth_core::sync::{Sync, SyncRegistry};
    let Some(s) = s.filter(|s| s.enable != Some(false)) else {
        return Ok(None);
    };
    let at = "extensions.sync";
    let credentials = match &s.credentials_file {
        Some(path) if build => {
            read_sync_credentials(path).map_err(|m| (format!("{at}.credentialsfile"), m))?
        }
        _ => std::collections::HashMap::new(),
    };
    let mut registries = Vec::new();
    for (i, r) in s.registries.iter().enumerate() {
        let at = format!("{at}.registries[{i}]");
        if r.urls.is_empty() {
            return Err((format!("{at}.urls"), "at least one URL is needed".into()));
        }
        for u in &r.urls {
            let authority = u
                .split_once("://")
                .map(|(_, rest)| rest.split('/').next().unwrap_or(""));
            let ok = (u.starts_with("https://") || u.starts_with("http://"))
                && authority.is_some_and(|a| !a.is_empty());
            if !ok {
                return Err((format!("{at}.urls"), format!("{u:?} is not an http(s) URL")));
            }
            // Never a password in a URL (it would reach logs): the
            // credentials file holds them.
            if authority.is_some_and(|a| a.contains('@')) {
                return Err((
                    format!("{at}.urls"),
                    "credentials belong in credentialsFile, not in the URL".into(),
                ));
            }
        }
        if !r.on_demand && r.poll_interval.is_none_or(|d| d.0.is_zero()) {
            return Err((
                format!("{at}.pollinterval"),
                "a registry that is not onDemand needs a pollInterval".into(),
            ));
        }
        let mut roots = Vec::new();
        if let Some(dir) = r.cert_dir.as_ref().filter(|_| build) {
            roots = read_cert_dir(dir).map_err(|m| (format!("{at}.certdir"), m))?;
        }
        let mut content = Vec::new();
        for (j, c) in r.content.iter().enumerate() {
            let at = format!("{at}.content[{j}]");
            let tags = match &c.tags {
                None => TagFilter::default(),
                Some(t) => TagFilter::new(
                    t.regex.as_deref(),
                    t.exclude_regex.as_deref(),
                    t.semver.unwrap_or(false),
                )
                .map_err(|m| (format!("{at}.tags"), m))?,
            };
            content.push(
                ContentRule::new(&c.prefix, c.destination.as_deref(), c.strip_prefix, tags)
                    .map_err(|m| (format!("{at}.prefix"), m))?,
            );
        }
        if content.is_empty() {
            // zot: no content rules means every repository.
            content.push(
                ContentRule::new("**", None, false, TagFilter::default())
                    .map_err(|m| (format!("{at}.content"), m))?,
            );
        }
        if !build {
            continue;
        }
        let upstream = Upstream::new(
            &r.urls,
            credentials.clone(),
            r.tls_verify.unwrap_or(true),
            roots,
            u32::try_from(r.max_retries.unwrap_or(0).min(10)).unwrap_or(0),
            r.retry_delay
                .map_or(std::time::Duration::from_secs(1), |d| d.0),
        )
        .map_err(|m| (format!("{at}.urls"), m))?;
        registries.push(SyncRegistry {
            upstream: Arc::new(upstream),
            on_demand: r.on_demand,
            poll_interval: r.poll_interval.map(|d| d.0).filter(|d| !d.is_zero()),
            content,
            manifest_check_interval: r
                .manifest_check_interval
                .map_or(DEFAULT_MANIFEST_CHECK, |d| d.0),
        });
    }
    Ok(build.then(|| Arc::new(Sync::new(registries))))
}

/// How often a cached tag is checked upstream when the configuration
/// does not say (`manifestCheckInterval`).
const DEFAULT_MANIFEST_CHECK: std::time::Duration = std::time::Duration::from_secs(300);

/// zot's `credentialsFile`: `{"host:port": {"username": ..., "password": ...}}`.
fn read_sync_credentials(
    path: &str,
) -> Result<std::collections::HashMap<String, (String, String)>, String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        username: String,
        password: String,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let map: std::collections::HashMap<String, Entry> =
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    Ok(map
        .into_iter()
        .map(|(host, e)| (host, (e.username, e.password)))
        .collect())
}

/// The CA certificates (`*.crt`) of a `certDir`.
fn read_cert_dir(dir: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{dir}: {e}"))?;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "crt") {
            let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            out.push(cert);
        }
    }
    Ok(out)
}

/// `storage.retention`, checked: globs and regular expressions compile.
fn retention(
    r: Option<&types::Retention>,
) -> Result<berth_core::retention::Retention, (String, String)> {
    use berth_core::retention::{KeepRule, Policy, Retention};
    let Some(r) = r else {
        return Ok(Retention::default());
    };
    let rule = |k: &types::KeepRule, at: String| {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        KeepRule::new(
            &k.patterns,
            k.pulled_within.map(|d| d.0),
            k.pushed_within.map(|d| d.0),
            count(k.most_recently_pushed_count),
            count(k.most_recently_pulled_count),
        )
        .map_err(|m| (at, m))
    };
    let mut policies = Vec::new();
    for (i, p) in r.policies.iter().enumerate() {
        let at = format!("storage.retention.policies[{i}]");
        let globs = p
            .repositories
            .iter()
            .map(|g| berth_auth::glob::Glob::new(g))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| (format!("{at}.repositories"), e.to_string()))?;
        let keep_tags = p
            .keep_tags
            .iter()
            .enumerate()
            .map(|(j, k)| rule(k, format!("{at}.keeptags[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let keep_untagged = p
            .keep_untagged
            .as_ref()
            .map(|k| rule(k, format!("{at}.keepuntagged")))
            .transpose()?;
        policies.push(Policy {
            repositories: Arc::new(move |name: &str| globs.iter().any(|g| g.matches(name))),
            delete_referrers: p.delete_referrers,
            delete_untagged: p.delete_untagged.unwrap_or(true),
            keep_tags,
            keep_untagged,
        });
    }
    Ok(Retention {
        dry_run: r.dry_run,
        delay: r.delay.map_or(Retention::default().delay, |d| d.0),
        policies,
    })
}

/// `http.ratelimit`, checked: rates are whole requests per second, at
/// least 1; methods are HTTP method names (upper-cased, as clients send them).
fn ratelimit(
    r: Option<&types::RateLimit>,
) -> Result<crate::ratelimit::RateLimits, (String, String)> {
    let Some(r) = r else {
        return Ok(Default::default());
    };
    let rate = |n: u64, at: String| {
        u32::try_from(n).ok().filter(|n| *n >= 1).ok_or((
            at,
            format!("{n} is not a rate (requests per second, at least 1)"),
        ))
    };
    let mut out = crate::ratelimit::RateLimits {
        rate: r
            .rate
            .map(|n| rate(n, "http.ratelimit.rate".into()))
            .transpose()?,
        methods: Vec::new(),
    };
    for (i, m) in r.methods.iter().enumerate() {
        let at = format!("http.ratelimit.methods[{i}]");
        let name = m.method.trim().to_ascii_uppercase();
        let method = http::Method::from_bytes(name.as_bytes())
            .ok()
            .filter(|_| !name.is_empty())
            .ok_or((
                format!("{at}.method"),
                format!("{:?} is not an HTTP method", m.method),
            ))?;
        out.methods
            .push((method, rate(m.rate, format!("{at}.rate"))?));
    }
    Ok(out)
}

/// The metrics path when metrics are enabled; zot's rules for the path.
fn metrics_path(c: &Config) -> Result<Option<String>, String> {
    let Some(m) = c.extensions.as_ref().and_then(|e| e.metrics.as_ref()) else {
        return Ok(None);
    };
    if m.enable == Some(false) {
        return Ok(None);
    }
    let path = m
        .prometheus
        .as_ref()
        .and_then(|p| p.path.clone())
        .unwrap_or_else(|| "/metrics".into());
    let reserved = ["/", "/v2", "/zot", "/livez", "/readyz", "/startupz", "/ui"];
    let clean = path.starts_with('/')
        && !path.contains("//")
        && !path.contains("..")
        && !path.ends_with('/');
    if !clean
        || reserved
            .iter()
            .any(|r| path == *r || path.starts_with(&format!("{r}/")) && *r != "/")
    {
        return Err(format!("{path:?} is not a clean path of its own"));
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Key { key, .. } => key,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn case_insensitive_keys() {
        let c = parse(
            r#"{"DistSpecVersion":"1.1.1","STORAGE":{"RootDirectory":"/tmp/x","Commit":false},
                "http":{"Address":"0.0.0.0","PORT":"5001"}}"#,
            "t",
        )
        .unwrap();
        let s = Settings::resolve(&c, "t").unwrap();
        assert_eq!((s.address.as_str(), s.port), ("0.0.0.0", 5001));
        assert_eq!(s.root_directory, PathBuf::from("/tmp/x"));
        assert!(!s.commit);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse(
            r#"{"storage":{"rootDirectory":"/x"},"http":{"tls":{"cert":"a","bogus":1}}}"#,
            "t",
        )
        .unwrap_err();
        assert_eq!(key_of(e), "http.tls.bogus");
        let e = parse(r#"{"storage":{"rootDirectory":"/x"},"nope":1}"#, "t").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("nope"), "{msg}");
        let e = parse(
            r#"{"storage":{"rootDirectory":"/x","RootDirectory":"/y"}}"#,
            "t",
        )
        .unwrap_err();
        assert_eq!(key_of(e).to_lowercase(), "storage.rootdirectory");
    }

    #[test]
    fn bad_values_are_named() {
        let c = parse(
            r#"{"storage":{"rootDirectory":"/x"},"http":{"port":"http"}}"#,
            "t",
        )
        .unwrap();
        assert_eq!(key_of(Settings::resolve(&c, "t").unwrap_err()), "http.port");
        let e = parse(r#"{"storage":{"rootDirectory":"/x","gcDelay":"7d"}}"#, "t").unwrap_err();
        assert_eq!(key_of(e), "storage.gcdelay");
        let c = parse(r#"{"storage":{},"http":{}}"#, "t").unwrap();
        assert_eq!(
            key_of(Settings::resolve(&c, "t").unwrap_err()),
            "storage.rootDirectory"
        );
        let c = parse(
            r#"{"storage":{"rootDirectory":"/x"},"log":{"level":"loud"}}"#,
            "t",
        )
        .unwrap();
        assert_eq!(key_of(Settings::resolve(&c, "t").unwrap_err()), "log.level");
        assert!(parse("[]", "t").is_err());
        assert!(parse("{}", "t").is_err());
    }

    #[test]
    fn numeric_port_and_defaults() {
        let c = parse(
            r#"{"storage":{"rootDirectory":"/x"},"http":{"port":5002}}"#,
            "t",
        )
        .unwrap();
        let s = Settings::resolve(&c, "t").unwrap();
        assert_eq!(s.port, 5002);
        assert!(s.commit);
        assert!(s.inactive.is_empty());
        assert!(!s.auth_unsupported);
    }

    #[test]
    fn every_example_config_is_accepted() {
        // The running cargo's value first: this binary may have been built
        // from a checkout at another path sharing the target directory.
        let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let dir = crate_dir.join("../../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json")
                && path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("config"))
            {
                let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
                Settings::resolve(&c, "example").unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected example configs in {}", dir.display());
    }
}
