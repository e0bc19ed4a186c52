//! Every configuration key Berth reads, and whether this build acts on it.
//!
//! [`KEYS`] lists each key path of zot's `config.json` that the config
//! types accept, as `InForce`, `NotActive` (accepted, not acted on: `berth
//! verify` and start-up name it when a configuration sets it) or `Refused`
//! (a configuration that sets it does not start). A `NotActive` section
//! covers everything under it. [`inactive_features`] walks a parsed
//! configuration against the table; a test walks the config types and
//! fails when a key is missing from it.

use super::types::Config;
use serde_json::Value;

/// What this build does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Acted on as zot documents it.
    InForce,
    /// Accepted but not acted on when its value asks for something
    /// (`When`); the reason is shown to the operator.
    NotActive(When, &'static str),
    /// Refused with its key at start-up and by `berth verify`.
    Refused,
}

/// Which values of a not-active key ask for something this build does not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Any value but `null`, `false`, `""`, `[]` or `{}`.
    Set,
    /// Only `true`.
    True,
    /// Only `false` (the default is what Berth does).
    False,
}

use Status::{InForce, NotActive, Refused};
use When::{False, Set, True};

/// Key paths as zot spells them: `.` between keys, `*` for a map's
/// user-chosen key, `[]` for an array's elements. Matching ignores case.
pub const KEYS: &[(&str, Status)] = &[
    // zot overwrites these build facts with its own; nothing to act on.
    ("distSpecVersion", InForce),
    ("goVersion", InForce),
    ("commit", InForce),
    ("releaseTag", InForce),
    ("binaryType", InForce),
    ("storage", InForce),
    ("storage.rootDirectory", InForce),
    (
        "storage.dedupe",
        NotActive(False, "Berth always stores one copy per digest"),
    ),
    (
        "storage.remoteCache",
        NotActive(Set, "there is no remote cache driver"),
    ),
    ("storage.gc", InForce),
    ("storage.gcDelay", InForce),
    ("storage.gcInterval", InForce),
    (
        "storage.gcTimeWindow",
        NotActive(Set, "a GC pass covers every repository"),
    ),
    (
        "storage.gcMaxSchedulerDelay",
        NotActive(Set, "GC runs every gcInterval"),
    ),
    ("storage.commit", InForce),
    (
        "storage.maxRepos",
        NotActive(Set, "the number of repositories is not limited"),
    ),
    (
        "storage.redirectBlobURL",
        NotActive(Set, "blobs are served by Berth itself"),
    ),
    (
        "storage.fastRestart",
        NotActive(Set, "start-up never walks the storage"),
    ),
    ("storage.retention", InForce),
    ("storage.retention.dryRun", InForce),
    ("storage.retention.delay", InForce),
    ("storage.retention.policies", InForce),
    ("storage.retention.policies[].repositories", InForce),
    ("storage.retention.policies[].deleteReferrers", InForce),
    ("storage.retention.policies[].deleteUntagged", InForce),
    ("storage.retention.policies[].keepTags", InForce),
    ("storage.retention.policies[].keepTags[].patterns", InForce),
    (
        "storage.retention.policies[].keepTags[].pulledWithin",
        InForce,
    ),
    (
        "storage.retention.policies[].keepTags[].pushedWithin",
        InForce,
    ),
    (
        "storage.retention.policies[].keepTags[].mostRecentlyPushedCount",
        InForce,
    ),
    (
        "storage.retention.policies[].keepTags[].mostRecentlyPulledCount",
        InForce,
    ),
    ("storage.retention.policies[].keepUntagged", InForce),
    (
        "storage.retention.policies[].keepUntagged.patterns",
        InForce,
    ),
    (
        "storage.retention.policies[].keepUntagged.pulledWithin",
        InForce,
    ),
    (
        "storage.retention.policies[].keepUntagged.pushedWithin",
        InForce,
    ),
    (
        "storage.retention.policies[].keepUntagged.mostRecentlyPushedCount",
        InForce,
    ),
    (
        "storage.retention.policies[].keepUntagged.mostRecentlyPulledCount",
        InForce,
    ),
    // Both checked key by key by `config::shared`.
    ("storage.storageDriver", InForce),
    ("storage.cacheDriver", InForce),
    (
        "storage.subPaths",
        NotActive(Set, "every repository lives under rootDirectory"),
    ),
    ("http", InForce),
    ("http.address", InForce),
    ("http.port", InForce),
    ("http.externalUrl", InForce),
    ("http.realm", InForce),
    (
        "http.allowOrigin",
        NotActive(Set, "no CORS headers are sent"),
    ),
    ("http.readTimeout", InForce),
    ("http.writeTimeout", InForce),
    ("http.tls", InForce),
    ("http.tls.cert", InForce),
    ("http.tls.key", InForce),
    ("http.tls.cacert", InForce),
    ("http.auth", InForce),
    ("http.auth.htpasswd", InForce),
    ("http.auth.htpasswd.path", InForce),
    ("http.auth.ldap", NotActive(Set, "LDAP users cannot log in")),
    (
        "http.auth.bearer",
        NotActive(Set, "tokens of an external token service are not accepted"),
    ),
    ("http.auth.openid", InForce),
    ("http.auth.openid.providers", InForce),
    ("http.auth.openid.providers.*.name", InForce),
    ("http.auth.openid.providers.*.clientid", InForce),
    ("http.auth.openid.providers.*.clientsecret", InForce),
    ("http.auth.openid.providers.*.credentialsFile", InForce),
    (
        "http.auth.openid.providers.*.keypath",
        NotActive(
            Set,
            "ID tokens are checked against the issuer's published keys",
        ),
    ),
    ("http.auth.openid.providers.*.issuer", InForce),
    (
        "http.auth.openid.providers.*.authurl",
        NotActive(Set, "endpoints come from the issuer's discovery document"),
    ),
    (
        "http.auth.openid.providers.*.tokenurl",
        NotActive(Set, "endpoints come from the issuer's discovery document"),
    ),
    ("http.auth.openid.providers.*.scopes", InForce),
    ("http.auth.openid.providers.*.claimMapping", InForce),
    (
        "http.auth.openid.providers.*.claimMapping.username",
        InForce,
    ),
    ("http.auth.openid.providers.*.claimMapping.groups", InForce),
    ("http.auth.openid.callbackAllowOrigins", InForce),
    ("http.auth.apikey", InForce),
    ("http.auth.sessionKeysFile", InForce),
    (
        "http.auth.sessionDriver",
        NotActive(Set, "sessions are kept in the registry's storage"),
    ),
    ("http.auth.secureSession", InForce),
    (
        "http.auth.sessionHashKey",
        NotActive(Set, "session keys are read from sessionKeysFile"),
    ),
    (
        "http.auth.sessionEncryptKey",
        NotActive(Set, "session keys are read from sessionKeysFile"),
    ),
    (
        "http.auth.mtls",
        NotActive(
            Set,
            "a client certificate is checked by http.tls.cacert but names no user",
        ),
    ),
    ("http.auth.failDelay", InForce),
    ("http.accessControl", InForce),
    ("http.accessControl.repositories", InForce),
    ("http.accessControl.repositories.*.policies", InForce),
    (
        "http.accessControl.repositories.*.policies[].users",
        InForce,
    ),
    (
        "http.accessControl.repositories.*.policies[].groups",
        InForce,
    ),
    (
        "http.accessControl.repositories.*.policies[].actions",
        InForce,
    ),
    (
        "http.accessControl.repositories.*.policies[].conditions",
        NotActive(Set, "conditions are not evaluated"),
    ),
    ("http.accessControl.repositories.*.defaultPolicy", InForce),
    ("http.accessControl.repositories.*.anonymousPolicy", InForce),
    ("http.accessControl.adminPolicy", InForce),
    ("http.accessControl.adminPolicy.users", InForce),
    ("http.accessControl.adminPolicy.groups", InForce),
    ("http.accessControl.adminPolicy.actions", InForce),
    (
        "http.accessControl.adminPolicy.conditions",
        NotActive(Set, "conditions are not evaluated"),
    ),
    ("http.accessControl.groups", InForce),
    ("http.accessControl.groups.*.users", InForce),
    ("http.accessControl.metrics", InForce),
    ("http.accessControl.metrics.users", InForce),
    ("http.accessControl.metrics.anonymousPolicy", InForce),
    ("http.ratelimit", InForce),
    ("http.ratelimit.rate", InForce),
    ("http.ratelimit.methods", InForce),
    ("http.ratelimit.methods[].method", InForce),
    ("http.ratelimit.methods[].rate", InForce),
    // Docker schema 2 manifests are always accepted ("docker2s2").
    ("http.compat", InForce),
    ("log", InForce),
    ("log.level", InForce),
    ("log.output", InForce),
    ("log.audit", InForce),
    ("extensions", InForce),
    ("extensions.sync", InForce),
    ("extensions.sync.enable", InForce),
    ("extensions.sync.credentialsFile", InForce),
    (
        "extensions.sync.downloadDir",
        NotActive(Set, "synced content is staged in the storage itself"),
    ),
    ("extensions.sync.registries", InForce),
    ("extensions.sync.registries[].urls", InForce),
    ("extensions.sync.registries[].onDemand", InForce),
    ("extensions.sync.registries[].pollInterval", InForce),
    ("extensions.sync.registries[].tlsVerify", InForce),
    ("extensions.sync.registries[].certDir", InForce),
    ("extensions.sync.registries[].maxRetries", InForce),
    ("extensions.sync.registries[].retryDelay", InForce),
    (
        "extensions.sync.registries[].maxRetryDelay",
        NotActive(Set, "retries wait retryDelay each time"),
    ),
    (
        "extensions.sync.registries[].onlySigned",
        NotActive(True, "images are synced signed or not"),
    ),
    ("extensions.sync.registries[].content", InForce),
    ("extensions.sync.registries[].content[].prefix", InForce),
    (
        "extensions.sync.registries[].content[].destination",
        InForce,
    ),
    (
        "extensions.sync.registries[].content[].stripPrefix",
        InForce,
    ),
    ("extensions.sync.registries[].content[].tags", InForce),
    ("extensions.sync.registries[].content[].tags.regex", InForce),
    (
        "extensions.sync.registries[].content[].tags.excludeRegex",
        InForce,
    ),
    (
        "extensions.sync.registries[].content[].tags.semver",
        InForce,
    ),
    // Manifests are stored byte for byte: digests are always preserved.
    (
        "extensions.sync.registries[].preserveDigest",
        NotActive(
            False,
            "manifests are never converted; digests are always preserved",
        ),
    ),
    (
        "extensions.sync.registries[].syncTimeout",
        NotActive(Set, "a sync is not bounded by a total time"),
    ),
    (
        "extensions.sync.registries[].responseHeaderTimeout",
        NotActive(Set, "upstream response headers are not timed separately"),
    ),
    (
        "extensions.sync.registries[].manifestCheckInterval",
        InForce,
    ),
    (
        "extensions.sync.registries[].syncLegacyCosignTags",
        NotActive(Set, "legacy cosign signature tags are not synced"),
    ),
    (
        "extensions.sync.registries[].credentialHelper",
        NotActive(Set, "upstream credentials come from credentialsFile"),
    ),
    (
        "extensions.sync.registries[].oauth2CredentialHelper",
        NotActive(Set, "upstream credentials come from credentialsFile"),
    ),
    (
        "extensions.sync.registries[].reqConcurrent",
        NotActive(Set, "upstream requests are not limited in number"),
    ),
    (
        "extensions.sync.registries[].reqPerSec",
        NotActive(Set, "upstream requests are not limited in rate"),
    ),
    (
        "extensions.sync.registries[].disableHTTP2",
        NotActive(Set, "HTTP/2 is negotiated with upstreams"),
    ),
    (
        "extensions.sync.registries[].maxIdleConnsPerHost",
        NotActive(Set, "the upstream client keeps its own idle connections"),
    ),
    ("extensions.search", NotActive(Set, "no search API")),
    ("extensions.metrics", InForce),
    ("extensions.metrics.enable", InForce),
    ("extensions.metrics.prometheus", InForce),
    ("extensions.metrics.prometheus.path", InForce),
    ("extensions.scrub", InForce),
    ("extensions.scrub.enable", InForce),
    ("extensions.scrub.interval", InForce),
    (
        "extensions.lint",
        NotActive(Set, "manifests are not linted"),
    ),
    (
        "extensions.ui",
        NotActive(Set, "zot's web UI is not served; / is Berth's page"),
    ),
    (
        "extensions.trust",
        NotActive(Set, "signatures are not verified"),
    ),
    (
        "extensions.mgmt",
        NotActive(Set, "no /zot/ext/mgmt endpoint"),
    ),
    ("extensions.apikey", NotActive(Set, "use http.auth.apikey")),
    ("extensions.events", NotActive(Set, "no events are sent")),
    (
        "scheduler",
        NotActive(Set, "background work is not spread over a worker pool"),
    ),
    ("cluster", NotActive(Set, "no scale-out cluster")),
];

/// The table entry of a key path (case-insensitive), with its spelling.
pub fn status(path: &str) -> Option<(&'static str, Status)> {
    KEYS.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(path))
        .copied()
}

/// Whether some table entry lies under `path` (it is a section).
fn has_children(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    KEYS.iter().any(|(k, _)| {
        let k = k.to_ascii_lowercase();
        k.len() > lower.len()
            && k.starts_with(&lower)
            && matches!(k.as_bytes()[lower.len()], b'.' | b'[')
    })
}

fn asks_for_something(v: &Value, when: When) -> bool {
    match when {
        True => v == &Value::Bool(true),
        False => v == &Value::Bool(false),
        Set => match v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        },
    }
}

/// The configured features that this build parses but does not act on,
/// each as its key path and the reason.
pub fn inactive_features(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Object(top) = &c.raw {
        for (k, v) in top {
            walk(k, k, v, &mut out);
        }
    }
    out
}

/// `pattern` is the key's path in the table's terms, `shown` the path as
/// the configuration has it (indices and map keys filled in).
fn walk(pattern: &str, shown: &str, v: &Value, out: &mut Vec<String>) {
    let Some((spelled, st)) = status(pattern) else {
        return; // the types refused unknown keys already
    };
    // Show the table's spelling of the last key.
    let shown = match (shown.rfind(['.', ']']), spelled.rfind(['.', ']'])) {
        (Some(i), Some(j)) => format!("{}{}", &shown[..=i], &spelled[j + 1..]),
        (None, None) => spelled.to_owned(),
        _ => shown.to_owned(),
    };
    match st {
        NotActive(when, why) => {
            if asks_for_something(v, when) {
                let value = match when {
                    False => "=false",
                    _ => "",
                };
                out.push(format!("{shown}{value} ({why})"));
            }
        }
        Refused => {}
        InForce => {
            if has_children(pattern) {
                descend(pattern, &shown, v, out);
            }
        }
    }
}

fn descend(pattern: &str, shown: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                descend_object(&format!("{pattern}[]"), &format!("{shown}[{i}]"), item, out);
            }
        }
        other => descend_object(pattern, shown, other, out),
    }
}

fn descend_object(pattern: &str, shown: &str, v: &Value, out: &mut Vec<String>) {
    let Value::Object(map) = v else { return };
    for (k, child) in map {
        let field = format!("{pattern}.{k}");
        if status(&field).is_some() {
            walk(&field, &format!("{shown}.{k}"), child, out);
        } else if has_children(&format!("{pattern}.*")) {
            // A map's own key (a repository pattern, a provider name).
            let entry = format!("{pattern}.*");
            let shown = format!("{shown}[{k:?}]");
            descend_object(&entry, &shown, child, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key path the config types accept, found by deserializing
    /// them from a source that offers every field of every struct.
    fn type_keys() -> Vec<String> {
        let mut seen = Vec::new();
        let _ = <Config as serde::Deserialize>::deserialize(super::super::trace::Tracer {
            path: String::new(),
            seen: &mut seen,
            stack: &mut Vec::new(),
        })
        .expect("the tracer satisfies every config type");
        seen
    }

    #[test]
    fn every_key_of_the_types_is_in_the_table() {
        let keys = type_keys();
        assert!(keys.len() > 150, "the tracer saw only {} keys", keys.len());
        let covered = |k: &str| {
            status(k).is_some()
                || KEYS.iter().any(|(t, st)| {
                    matches!(st, NotActive(..) | Refused) && {
                        let t = t.to_ascii_lowercase();
                        k.starts_with(&t) && matches!(k.as_bytes().get(t.len()), Some(b'.' | b'['))
                    }
                })
        };
        let missing: Vec<&String> = keys.iter().filter(|k| !covered(k)).collect();
        assert!(
            missing.is_empty(),
            "keys neither in force nor listed: {missing:#?}"
        );
        // And the table names no key the types do not have.
        for (k, _) in KEYS {
            assert!(
                keys.iter().any(|t| t.eq_ignore_ascii_case(k)),
                "table entry {k} is not a key of the config types"
            );
        }
    }

    #[test]
    fn issue_keys_are_classified() {
        for k in [
            "http.compat",
            "http.readTimeout",
            "http.writeTimeout",
            "http.ratelimit",
            "http.ratelimit.methods[].rate",
        ] {
            assert_eq!(status(k).map(|s| s.1), Some(InForce), "{k}");
        }
        for k in [
            "http.auth.mtls",
            "http.auth.sessionHashKey",
            "http.auth.sessionEncryptKey",
            "http.auth.sessionDriver",
            "scheduler",
            "extensions.sync.registries[].maxRetryDelay",
            "extensions.sync.registries[].preserveDigest",
            "extensions.sync.registries[].syncTimeout",
            "extensions.sync.registries[].responseHeaderTimeout",
            "extensions.sync.registries[].syncLegacyCosignTags",
            "extensions.sync.registries[].credentialHelper",
            "extensions.sync.registries[].oauth2CredentialHelper",
        ] {
            assert!(matches!(status(k), Some((_, NotActive(..)))), "{k}");
        }
    }

    #[test]
    fn a_config_setting_inactive_keys_hears_of_each() {
        let c = super::super::parse(
            r#"{"storage":{"rootDirectory":"/x","dedupe":false,"gcTimeWindow":"1h"},
                "http":{"compat":["docker2s2"],"readTimeout":"5s","allowOrigin":"*",
                  "auth":{"mtls":{"x":1},"sessionHashKey":"k","sessionEncryptKey":"k","sessionDriver":{"name":"redis"},
                    "htpasswd":{"path":"/h"}},
                  "accessControl":{"repositories":{"**":{"policies":[{"users":["a"],"actions":["read"],"conditions":[{"a":1}]}]}}}},
                "scheduler":{"numWorkers":4},
                "extensions":{"sync":{"registries":[
                  {"urls":["https://a"],"onDemand":true,"onlySigned":false,"preserveDigest":true},
                  {"urls":["https://b"],"onDemand":true,"onlySigned":true,"preserveDigest":false,"maxRetryDelay":"5m",
                   "syncTimeout":"1m","responseHeaderTimeout":"1s","syncLegacyCosignTags":true,
                   "credentialHelper":"ecr","oauth2CredentialHelper":{"a":1}}]}}}"#,
            "t",
        )
        .unwrap();
        let got = inactive_features(&c);
        let text = got.join("\n");
        for want in [
            "storage.dedupe=false",
            "storage.gcTimeWindow",
            "http.allowOrigin",
            "http.auth.mtls",
            "http.auth.sessionHashKey",
            "http.auth.sessionEncryptKey",
            "http.auth.sessionDriver",
            r#"http.accessControl.repositories["**"].policies[0].conditions"#,
            "scheduler",
            "extensions.sync.registries[1].onlySigned",
            "extensions.sync.registries[1].preserveDigest=false",
            "extensions.sync.registries[1].maxRetryDelay",
            "extensions.sync.registries[1].syncTimeout",
            "extensions.sync.registries[1].responseHeaderTimeout",
            "extensions.sync.registries[1].syncLegacyCosignTags",
            "extensions.sync.registries[1].credentialHelper",
            "extensions.sync.registries[1].oauth2CredentialHelper",
        ] {
            assert!(
                got.iter().any(|l| l.starts_with(&format!("{want} ("))),
                "{want} missing from:\n{text}"
            );
        }
        for quiet in ["registries[0]", "compat", "readTimeout", "htpasswd"] {
            assert!(!text.contains(quiet), "{quiet} reported:\n{text}");
        }
        assert_eq!(got.len(), 17, "{text}");
    }
}
