//! The store replicas share: zot's `storage.storageDriver` (S3, with the
//! keys of distribution's S3 driver that zot passes through) for content,
//! and `storage.cacheDriver` with `name: "postgres"` (Berth's own value of
//! zot's key) for everything that changes.
//!
//! ```json
//! "storage": {
//!   "rootDirectory": "/var/lib/berth",
//!   "storageDriver": {"name": "s3", "bucket": "registry", "region": "us-east-1",
//!                     "regionendpoint": "https://s3.example.com", "rootdirectory": "/berth",
//!                     "forcepathstyle": true, "accesskey": "...", "secretkey": "..."},
//!   "cacheDriver": {"name": "postgres", "url": "postgres://berth:secret@db:5432/berth"}
//! }
//! ```
//!
//! zot's other cache drivers (`boltdb`, `redis`, `dynamodb`) hold its dedupe
//! cache, which Berth does not need: they parse and are reported as not
//! active. An S3 driver without the PostgreSQL store is refused (Berth keeps
//! no mutable state in S3), and so is the PostgreSQL store without S3.

use serde_json::{Map, Value};

/// A secret string: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// `storage.storageDriver` with `name: "s3"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3 {
    pub bucket: String,
    pub region: Option<String>,
    /// `regionendpoint`, with a scheme (`https://` added when it has none,
    /// or `http://` with `secure: false`).
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub secure: bool,
    pub skip_verify: bool,
    /// `accesskey`/`secretkey`; when absent, the standard AWS environment
    /// variables (and instance credentials) are used.
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// `rootdirectory`: the prefix of every object, without slashes around.
    pub root: String,
}

/// The shared store: content in S3, state in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStore {
    pub s3: S3,
    /// `storage.cacheDriver.url` (`postgres://...`).
    pub postgres: Secret,
    /// `storage.cacheDriver.maxConnections` (default 16): this replica's pool.
    pub max_connections: usize,
}

/// S3 driver keys of distribution's that Berth does not act on, with why.
const S3_NOT_ACTIVE: &[(&str, &str)] = &[
    (
        "encrypt",
        "objects are not server-side encrypted by request",
    ),
    ("keyid", "objects are not server-side encrypted by request"),
    (
        "v4auth",
        "requests are always signed with signature version 4",
    ),
    ("chunksize", "content is written in parts of 8 MiB"),
    (
        "multipartcopychunksize",
        "content is never copied inside S3",
    ),
    (
        "multipartcopymaxconcurrency",
        "content is never copied inside S3",
    ),
    (
        "multipartcopythresholdsize",
        "content is never copied inside S3",
    ),
    (
        "storageclass",
        "objects get the bucket's default storage class",
    ),
    ("useragent", "the user agent is object_store's"),
    ("usedualstack", "the endpoint is used as given"),
    ("accelerate", "the endpoint is used as given"),
    (
        "loglevel",
        "S3 requests are logged by Berth's own log level",
    ),
    ("objectacl", "objects get the bucket's default ACL"),
    (
        "sessiontoken",
        "a session token comes from AWS_SESSION_TOKEN",
    ),
    ("maxrequestspersecond", "S3 requests are not rate limited"),
    ("maxretries", "object_store's retry policy applies"),
];

type Problem = (String, String);

fn string(map: &Map<String, Value>, section: &str, key: &str) -> Result<Option<String>, Problem> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err((format!("{section}.{key}"), "must be a string".into())),
    }
}

fn boolean(
    map: &Map<String, Value>,
    section: &str,
    key: &str,
    default: bool,
) -> Result<bool, Problem> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        // distribution's parameters arrive as strings from environment
        // overrides; zot's JSON may carry them so too.
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err((format!("{section}.{key}"), "must be true or false".into())),
    }
}

fn s3(map: &Map<String, Value>, inactive: &mut Vec<String>) -> Result<S3, Problem> {
    const SECTION: &str = "storage.storageDriver";
    let known = [
        "name",
        "rootdirectory",
        "region",
        "regionendpoint",
        "bucket",
        "forcepathstyle",
        "secure",
        "skipverify",
        "accesskey",
        "secretkey",
    ];
    for key in map.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        match S3_NOT_ACTIVE.iter().find(|(k, _)| k == key) {
            Some((_, why)) => inactive.push(format!("{SECTION}.{key} ({why})")),
            None => {
                return Err((
                    format!("{SECTION}.{key}"),
                    "is not a key of the S3 storage driver".into(),
                ))
            }
        }
    }
    let bucket = string(map, SECTION, "bucket")?
        .ok_or_else(|| (format!("{SECTION}.bucket"), "is required".to_owned()))?;
    let secure = boolean(map, SECTION, "secure", true)?;
    let endpoint = string(map, SECTION, "regionendpoint")?.map(|e| {
        if e.contains("://") {
            e
        } else if secure {
            format!("https://{e}")
        } else {
            format!("http://{e}")
        }
    });
    if let Some(e) = &endpoint {
        let url = url::Url::parse(e)
            .map_err(|x| (format!("{SECTION}.regionendpoint"), format!("{e:?}: {x}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err((
                format!("{SECTION}.regionendpoint"),
                format!("{e:?}: only http and https endpoints"),
            ));
        }
        if url.scheme() == "http" && secure && map.contains_key("secure") {
            return Err((
                format!("{SECTION}.regionendpoint"),
                "is http:// but secure is true".into(),
            ));
        }
    }
    let region = string(map, SECTION, "region")?;
    if region.is_none() && endpoint.is_none() && std::env::var_os("AWS_REGION").is_none() {
        return Err((
            format!("{SECTION}.region"),
            "is required (or regionendpoint, or AWS_REGION in the environment)".into(),
        ));
    }
    let access_key = string(map, SECTION, "accesskey")?;
    let secret_key = string(map, SECTION, "secretkey")?.map(Secret);
    if access_key.is_some() != secret_key.is_some() {
        return Err((
            format!("{SECTION}.accesskey"),
            "accesskey and secretkey go together".into(),
        ));
    }
    Ok(S3 {
        bucket,
        region,
        endpoint,
        force_path_style: boolean(map, SECTION, "forcepathstyle", false)?,
        secure,
        skip_verify: boolean(map, SECTION, "skipverify", false)?,
        access_key,
        secret_key,
        root: string(map, SECTION, "rootdirectory")?
            .unwrap_or_default()
            .trim_matches('/')
            .to_owned(),
    })
}

/// Resolves the two driver sections. `Ok(None)`: the local filesystem
/// store. Not-active keys are added to `inactive`.
pub fn resolve(
    storage_driver: Option<&Map<String, Value>>,
    cache_driver: Option<&Map<String, Value>>,
    inactive: &mut Vec<String>,
) -> Result<Option<SharedStore>, Problem> {
    let cache_name = match cache_driver {
        None => None,
        Some(c) => Some(
            string(c, "storage.cacheDriver", "name")?
                .ok_or_else(|| {
                    (
                        "storage.cacheDriver.name".to_owned(),
                        "is required".to_owned(),
                    )
                })?
                .to_ascii_lowercase(),
        ),
    };
    let postgres = match (cache_driver, cache_name.as_deref()) {
        (Some(c), Some("postgres")) => {
            for key in c.keys() {
                if !["name", "url", "maxconnections"].contains(&key.as_str()) {
                    return Err((
                        format!("storage.cacheDriver.{key}"),
                        "is not a key of the postgres store (name, url, maxConnections)".into(),
                    ));
                }
            }
            let url = string(c, "storage.cacheDriver", "url")?.ok_or_else(|| {
                (
                    "storage.cacheDriver.url".to_owned(),
                    "is required".to_owned(),
                )
            })?;
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return Err((
                    "storage.cacheDriver.url".into(),
                    "must be a postgres:// URL".into(),
                ));
            }
            // The pool parses the URL; it connects only when first used.
            if let Err(e) = berth_storage::cluster::ClusterBackend::pool(&url, 1) {
                return Err(("storage.cacheDriver.url".into(), e.to_string()));
            }
            let max = match c.get("maxconnections") {
                None | Some(Value::Null) => 16,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(n @ 1..=1000) => n as usize,
                    _ => {
                        return Err((
                            "storage.cacheDriver.maxConnections".into(),
                            "must be from 1 to 1000".into(),
                        ))
                    }
                },
                Some(_) => {
                    return Err((
                        "storage.cacheDriver.maxConnections".into(),
                        "must be a number".into(),
                    ))
                }
            };
            Some((Secret(url), max))
        }
        (Some(_), Some(name @ ("boltdb" | "redis" | "dynamodb"))) => {
            inactive.push(format!(
                "storage.cacheDriver ({name}: Berth keeps no separate dedupe cache)"
            ));
            None
        }
        (Some(_), Some(other)) => {
            return Err((
                "storage.cacheDriver.name".into(),
                format!("unknown driver {other:?} (postgres, or zot's boltdb, redis, dynamodb)"),
            ))
        }
        _ => None,
    };
    let s3 = match storage_driver {
        None => None,
        Some(d) => {
            let name = string(d, "storage.storageDriver", "name")?.unwrap_or_default();
            if !name.eq_ignore_ascii_case("s3") {
                return Err((
                    "storage.storageDriver.name".into(),
                    format!("{name:?}: only \"s3\" is supported"),
                ));
            }
            Some(s3(d, inactive)?)
        }
    };
    match (s3, postgres) {
        (None, None) => Ok(None),
        (Some(s3), Some((postgres, max_connections))) => Ok(Some(SharedStore {
            s3,
            postgres,
            max_connections,
        })),
        (Some(_), None) => Err((
            "storage.cacheDriver".into(),
            "the S3 storage driver needs {\"name\": \"postgres\", \"url\": ...} here: Berth keeps its mutable state in PostgreSQL, never in S3".into(),
        )),
        (None, Some(_)) => Err((
            "storage.storageDriver".into(),
            "the postgres store keeps content in S3: add {\"name\": \"s3\", ...} here".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn s3_with_postgres_resolves_and_hides_its_secrets() {
        let mut inactive = Vec::new();
        let s = resolve(
            Some(&map(
                r#"{"name":"s3","bucket":"b","region":"garage","regionendpoint":"127.0.0.1:3900",
                    "secure":false,"forcepathstyle":true,"rootdirectory":"/berth/","accesskey":"GK1",
                    "secretkey":"shh","storageclass":"STANDARD"}"#,
            )),
            Some(&map(r#"{"name":"postgres","url":"postgres://u:pw@h/db"}"#)),
            &mut inactive,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(s.s3.root, "berth");
        assert!(s.s3.force_path_style && !s.s3.secure);
        assert_eq!(s.max_connections, 16);
        let shown = format!("{s:?}");
        assert!(!shown.contains("shh") && !shown.contains("pw@"), "{shown}");
        assert_eq!(inactive.len(), 1);
        assert!(inactive[0].starts_with("storage.storageDriver.storageclass ("));
    }

    #[test]
    fn half_a_shared_store_and_bad_keys_are_refused() {
        let mut inactive = Vec::new();
        let s3 = map(r#"{"name":"s3","bucket":"b","region":"r"}"#);
        let pg = map(r#"{"name":"postgres","url":"postgres://h/db"}"#);
        let key = |r: Result<Option<SharedStore>, Problem>| r.unwrap_err().0;
        assert_eq!(
            key(resolve(Some(&s3), None, &mut inactive)),
            "storage.cacheDriver"
        );
        assert_eq!(
            key(resolve(None, Some(&pg), &mut inactive)),
            "storage.storageDriver"
        );
        let gcs = map(r#"{"name":"gcs","bucket":"b"}"#);
        assert_eq!(
            key(resolve(Some(&gcs), Some(&pg), &mut inactive)),
            "storage.storageDriver.name"
        );
        let typo = map(r#"{"name":"s3","bucket":"b","region":"r","bukcet":"x"}"#);
        assert_eq!(
            key(resolve(Some(&typo), Some(&pg), &mut inactive)),
            "storage.storageDriver.bukcet"
        );
        // TLS settings are checked before anything connects.
        for url in [
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "postgres://h/db?sslmode=bogus",
            "postgres://h/db?sslrootcert=/etc/hostname",
        ] {
            let tls = map(&format!(r#"{{"name":"postgres","url":"{url}"}}"#));
            assert_eq!(
                key(resolve(Some(&s3), Some(&tls), &mut inactive)),
                "storage.cacheDriver.url",
                "{url}"
            );
        }
        let tls = map(r#"{"name":"postgres","url":"postgres://h/db?sslmode=verify-full"}"#);
        assert!(resolve(Some(&s3), Some(&tls), &mut inactive).is_ok());
        let bad_url = map(r#"{"name":"postgres","url":"mysql://h/db"}"#);
        assert_eq!(
            key(resolve(Some(&s3), Some(&bad_url), &mut inactive)),
            "storage.cacheDriver.url"
        );
        let no_bucket = map(r#"{"name":"s3","region":"r"}"#);
        assert_eq!(
            key(resolve(Some(&no_bucket), Some(&pg), &mut inactive)),
            "storage.storageDriver.bucket"
        );
        let half_keys = map(r#"{"name":"s3","bucket":"b","region":"r","accesskey":"a"}"#);
        assert_eq!(
            key(resolve(Some(&half_keys), Some(&pg), &mut inactive)),
            "storage.storageDriver.accesskey"
        );
        assert!(inactive.is_empty());
        // zot's own cache drivers: parsed, reported, not used.
        let bolt = map(r#"{"name":"boltdb","rootDir":"/x"}"#);
        assert_eq!(resolve(None, Some(&bolt), &mut inactive).unwrap(), None);
        assert_eq!(inactive.len(), 1);
    }
}
