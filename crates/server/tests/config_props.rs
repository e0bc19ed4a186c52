//! Property tests of the server's parsers of outside input: zot's
//! `config.json` (read and resolved), Go duration strings, and the session
//! cookie. Whatever the input, nothing panics; a cookie Berth sets reads
//! back to the same value, and a tampered one reads as nothing.
//!
//! Short run: `cargo test -p berth-server --test config_props` (256 cases
//! each, or `PROPTEST_CASES`); the long run and its result are in README
//! ("Fuzzing").

use berth_server::config::{self, duration, Settings};
use berth_server::session;
use http::{header, HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;
use std::time::Duration;

const EXAMPLES: [&str; 3] = [
    include_str!("../../../examples/config-minimal.json"),
    include_str!("../../../examples/config-seed.json"),
    include_str!("../../../examples/config-tls.json"),
];

/// Keys of zot's configuration, in their documented spelling.
const KEYS: &[&str] = &[
    "distSpecVersion",
    "storage",
    "rootDirectory",
    "dedupe",
    "gc",
    "gcDelay",
    "gcInterval",
    "retention",
    "dryRun",
    "delay",
    "policies",
    "repositories",
    "deleteReferrers",
    "deleteUntagged",
    "keepTags",
    "patterns",
    "pushedWithin",
    "pulledWithin",
    "mostRecentlyPushedCount",
    "mostRecentlyPulledCount",
    "subPaths",
    "storageDriver",
    "commit",
    "http",
    "address",
    "port",
    "realm",
    "externalUrl",
    "tls",
    "cert",
    "key",
    "cacert",
    "auth",
    "htpasswd",
    "path",
    "apikey",
    "failDelay",
    "openid",
    "providers",
    "issuer",
    "clientid",
    "clientsecret",
    "scopes",
    "sessionKeysFile",
    "accessControl",
    "anonymousPolicy",
    "defaultPolicy",
    "adminPolicy",
    "users",
    "groups",
    "actions",
    "metrics",
    "log",
    "level",
    "output",
    "audit",
    "extensions",
    "enable",
    "prometheus",
    "sync",
    "credentialsFile",
    "registries",
    "urls",
    "onDemand",
    "tlsVerify",
    "maxRetries",
    "retryDelay",
    "manifestCheckInterval",
    "pollInterval",
    "content",
    "prefix",
    "destination",
    "stripPrefix",
    "tags",
    "regex",
    "semver",
    "scrub",
    "interval",
    "search",
    "ui",
    "ldap",
    "bearer",
    "compat",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
        "[0-9]{0,22}(\\.[0-9]{0,3})?(ns|us|ms|s|m|h){0,2}".prop_map(Value::String),
        "[a-z*/.{},^$\\[\\]()+?|-]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "read", "create", "update", "delete", "**", "info", "5000", "0", "/tmp"
        ])
        .prop_map(|s| Value::String(s.into())),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => prop::sample::select(KEYS).prop_map(|k| k.to_uppercase()),
        1 => "[a-zA-Z]{1,10}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Object(m) => m.values().map(count).sum(),
        Value::Array(a) => a.iter().map(count).sum(),
        _ => 0,
    }
}

/// Replaces the `n`-th node of a tree (pre-order) with `new`.
fn replace_nth(v: &mut Value, n: &mut usize, new: &mut Option<Value>) {
    if *n == 0 {
        if let Some(new) = new.take() {
            *v = new;
        }
        return;
    }
    *n -= 1;
    let children: Vec<&mut Value> = match v {
        Value::Object(m) => m.values_mut().collect(),
        Value::Array(a) => a.iter_mut().collect(),
        _ => Vec::new(),
    };
    for c in children {
        if new.is_none() {
            return;
        }
        replace_nth(c, n, new);
    }
}

/// Parses, and when that succeeds resolves, as `berth serve` would.
fn read(text: &str) {
    if let Ok(c) = config::parse(text, "prop.json") {
        let _ = config::inactive_features(&c);
        let _ = Settings::resolve(&c, "prop.json");
    }
}

proptest! {
    #[test]
    fn config_text_never_panics(text in ".{0,200}") {
        read(&text);
    }

    #[test]
    fn config_trees_never_panic(v in json()) {
        read(&v.to_string());
    }

    /// An example configuration with some of its values replaced: deep
    /// paths that random trees rarely reach.
    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..EXAMPLES.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop_oneof![leaf(), json()]), 1..5),
    ) {
        let mut v: Value = serde_json::from_str(EXAMPLES[which]).unwrap();
        for (at, new) in edits {
            let mut n = at.index(count(&v));
            replace_nth(&mut v, &mut n, &mut Some(new));
        }
        read(&v.to_string());
    }

    #[test]
    fn duration_parse_never_panics(s in ".{0,40}", shaped in "[+-]?[0-9.]{0,25}(ns|us|µs|ms|s|m|h|d|x){0,3}[0-9.]{0,5}") {
        let _ = duration::parse(&s);
        if let Ok(d) = duration::parse(&shaped) {
            // Whatever parses fits Go's range and can be added to a clock.
            prop_assert!(d.as_nanos() <= i64::MAX as u128);
            prop_assert!(std::time::Instant::now().checked_add(d).is_some());
        }
    }

    #[test]
    fn durations_round_trip(h in 0u64..2_000_000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms");
        let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        let got = duration::parse(&text).unwrap();
        // Parsed through f64 seconds, as Go's own float steps do not apply:
        // equal to the microsecond.
        prop_assert!(got.abs_diff(want) < Duration::from_micros(1), "{text}: {got:?} != {want:?}");
        let secs = format!("{}s", want.as_secs());
        prop_assert_eq!(duration::parse(&secs).unwrap(), Duration::from_secs(want.as_secs()));
    }
}

fn cookie_headers(values: &[Vec<u8>]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            h.append(header::COOKIE, v);
        }
    }
    h
}

/// The `name=value` part of a `Set-Cookie` value.
fn cookie_pair(set_cookie: &HeaderValue) -> String {
    let text = set_cookie.to_str().unwrap();
    text.split(';').next().unwrap().to_owned()
}

proptest! {
    #[test]
    fn cookie_headers_never_panic(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 0..3),
        shaped in "((berth_session|berth_login|x)=[A-Za-z0-9+/=%\"; ]{0,40}; ?){0,4}",
    ) {
        let key = cookie::Key::generate();
        let mut values = values;
        values.push(shaped.into_bytes());
        let h = cookie_headers(&values);
        let _ = session::jar(&h);
        // Nothing but what Berth sealed with its key opens.
        prop_assert_eq!(session::private_value(&h, &key, session::SESSION_COOKIE), None);
        prop_assert_eq!(session::private_value(&h, &key, session::LOGIN_COOKIE), None);
    }

    #[test]
    fn session_cookies_round_trip(value in ".{0,200}", secure in any::<bool>(), other in "[a-z]{1,8}=[a-z0-9]{0,8}") {
        let key = cookie::Key::generate();
        let set = session::set_private(
            &key, session::SESSION_COOKIE, value.clone(), "/", session::SESSION_TTL, secure,
        );
        let pair = cookie_pair(&set);
        let h = cookie_headers(&[format!("{other}; {pair}").into_bytes()]);
        prop_assert_eq!(session::private_value(&h, &key, session::SESSION_COOKIE), Some(value));
        // Another key, or another name, opens nothing.
        let stranger = cookie::Key::generate();
        prop_assert_eq!(session::private_value(&h, &stranger, session::SESSION_COOKIE), None);
        prop_assert_eq!(session::private_value(&h, &key, session::LOGIN_COOKIE), None);
    }

    #[test]
    fn tampered_session_cookies_open_nothing(value in ".{1,60}", at in any::<prop::sample::Index>(), bit in 0u8..6) {
        let key = cookie::Key::generate();
        let set = session::set_private(
            &key, session::SESSION_COOKIE, value, "/", session::SESSION_TTL, false,
        );
        let pair = cookie_pair(&set);
        let (name, sealed) = pair.split_once('=').unwrap();
        let mut sealed = sealed.as_bytes().to_vec();
        let i = at.index(sealed.len());
        // Flip to another base64 character.
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let pos = B64.iter().position(|&c| c == sealed[i]).unwrap_or(0);
        sealed[i] = B64[(pos ^ (1 << bit)) % 64];
        let h = cookie_headers(&[format!("{name}={}", String::from_utf8(sealed).unwrap()).into_bytes()]);
        prop_assert_eq!(session::private_value(&h, &key, session::SESSION_COOKIE), None);
    }
}
