//! Property tests of what reaches berth-auth from outside: `Authorization`
//! headers, htpasswd lines, API key requests and scopes, repository globs.
//! Parsing never panics; what is printed parses back the same.
//!
//! Short run: `cargo test -p berth-auth --test props` (256 cases each, or
//! `PROPTEST_CASES`); the long run and its result are in README ("Fuzzing").

use base64::Engine;
use berth_auth::apikey::{self, ApiKey, KeyRequest};
use berth_auth::basic::{self, HeaderError, Presented};
use berth_auth::glob::Glob;
use berth_auth::htpasswd;
use berth_auth::policy::{Action, Actions, Scope};
use proptest::prelude::*;

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Header values made of the pieces that matter to the parser.
fn headerish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"Basic ".to_vec()),
            Just(b"bearer ".to_vec()),
            Just(b" ".to_vec()),
            Just(b"Og==".to_vec()),
            "[A-Za-z0-9+/=]{0,12}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..6),
            ".{0,8}".prop_map(|s| b64(s.as_bytes()).into_bytes()),
        ],
        0..8,
    )
    .prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn authorization_parse_never_panics(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..3),
        shaped in headerish(),
    ) {
        let _ = basic::parse(values.iter().map(Vec::as_slice));
        let _ = basic::parse([shaped.as_slice()]);
    }

    #[test]
    fn basic_credentials_round_trip(user in "[^:]{0,40}", password in ".{0,60}", scheme in "[bB][aA][sS][iI][cC]", pad in " {0,3}") {
        let header = format!("{scheme} {pad}{}{pad}", b64(format!("{user}:{password}").as_bytes()));
        let got = basic::parse([header.as_bytes()]);
        if user.is_empty() && password.is_empty() {
            prop_assert_eq!(got, Ok(Presented::None));
        } else {
            prop_assert_eq!(got, Ok(Presented::Basic { user, password }));
        }
    }

    #[test]
    fn bearer_tokens_round_trip(token in "[A-Za-z0-9._~+/=-]{1,200}") {
        let header = format!("Bearer {token}");
        prop_assert_eq!(basic::parse([header.as_bytes()]), Ok(Presented::Bearer(token)));
    }

    #[test]
    fn repeated_headers_are_refused(a in ".{0,40}", b in ".{0,40}") {
        prop_assert_eq!(basic::parse([a.as_bytes(), b.as_bytes()]), Err(HeaderError::Repeated));
    }

    #[test]
    fn htpasswd_parse_never_panics(text in ".{0,400}", lines in prop::collection::vec("[^\n]{0,40}", 0..10)) {
        let _ = htpasswd::parse(&text);
        let _ = htpasswd::parse(&lines.join("\n"));
        let _ = htpasswd::parse(&lines.join("\r\n"));
    }

    /// Every usable `user:hash` line written is read back, the last one
    /// winning (well-formed bcrypt: cost 04-31, 53 characters of salt and
    /// hash; unusable lines are reported and skipped, tested beside the
    /// parser).
    #[test]
    fn htpasswd_lines_round_trip(
        entries in prop::collection::vec(("[a-zA-Z0-9_.@-]{1,20}", "\\$2y\\$(0[4-9]|[12][0-9]|3[01])\\$[./A-Za-z0-9]{53}"), 0..12),
        crlf in any::<bool>(),
    ) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let text = std::iter::once("# a comment".to_owned())
            .chain(entries.iter().map(|(u, h)| format!("{u}:{h}")))
            .chain(std::iter::once(String::new()))
            .collect::<Vec<_>>()
            .join(sep);
        let users = htpasswd::parse(&text);
        let mut want = std::collections::HashMap::new();
        for (u, h) in &entries {
            want.insert(u.clone(), h.clone());
        }
        prop_assert_eq!(users, want);
    }

    /// A stored hash of any shape (the file is the operator's, but a
    /// malformed line must not take the server down). Strings that would be
    /// well-formed bcrypt or SHA-crypt hashes with a huge cost are left out:
    /// they are slow by design, not a crash.
    #[test]
    fn verify_hash_never_panics(
        password in ".{0,40}",
        prefix in prop_oneof![Just(""), Just("$2a$"), Just("$2b$"), Just("$2y$"), Just("$5$"), Just("$6$")],
        rest in "[^r]{0,40}",
    ) {
        let hash = format!("{prefix}{rest}");
        prop_assert!(!htpasswd::verify_hash(&password, &hash));
    }

    #[test]
    fn scope_parse_never_panics(s in ".{0,120}", pattern in "[a-z*?{},/]{0,30}", acts in "[a-z,]{0,30}") {
        let _ = Scope::parse(&s);
        let _ = Scope::parse(&format!("repository:{pattern}:{acts}"));
    }

    #[test]
    fn scopes_round_trip(
        pattern in "[a-z0-9]{1,8}(/[a-z0-9*]{1,8}){0,3}(/\\*\\*)?",
        actions in prop::collection::btree_set(0usize..4, 1..4),
        prefixed in any::<bool>(),
    ) {
        let names: Vec<&str> = actions.iter().map(|&i| Action::ALL[i].as_str()).collect();
        let text = format!("{}{pattern}:{}", if prefixed { "repository:" } else { "" }, names.join(","));
        let scope = Scope::parse(&text).unwrap();
        prop_assert_eq!(scope.repositories.as_str(), pattern.as_str());
        prop_assert_eq!(scope.actions, Actions::parse(&names).unwrap());
        for (i, a) in Action::ALL.into_iter().enumerate() {
            prop_assert_eq!(scope.actions.contains(a), actions.contains(&i));
        }
    }

    #[test]
    fn action_names_round_trip(i in 0usize..4, upper in any::<bool>()) {
        let a = Action::ALL[i];
        let text = if upper { a.as_str().to_ascii_uppercase() } else { a.to_string() };
        prop_assert_eq!(Action::parse(&text), Some(a));
    }

    #[test]
    fn glob_never_panics(pattern in ".{0,80}", shaped in "[a-z*?{},/]{0,60}", name in ".{0,80}", name2 in "[a-z/]{0,40}") {
        for p in [&pattern, &shaped] {
            if let Ok(g) = Glob::new(p) {
                let _ = g.matches(&name);
                let _ = g.matches(&name2);
            }
        }
    }

    /// A pattern without metacharacters matches exactly itself; `**`
    /// matches every name; `p/**` matches `p` and everything under it.
    #[test]
    fn literal_globs_match_themselves(lit in "[a-z0-9._-]{1,10}(/[a-z0-9._-]{1,10}){0,3}", other in "[a-z0-9./_-]{1,30}") {
        let g = Glob::new(&lit).unwrap();
        prop_assert!(g.matches(&lit));
        prop_assert_eq!(g.matches(&other), other == lit);
        prop_assert!(Glob::new("**").unwrap().matches(&other));
        let under = Glob::new(&format!("{lit}/**")).unwrap();
        prop_assert!(under.matches(&lit));
        let below = format!("{lit}/{other}");
        prop_assert!(under.matches(&below));
    }

    #[test]
    fn api_key_requests_never_panic(
        date in prop::option::of(prop_oneof![
            ".{0,40}",
            "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}T[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        ]),
        scopes in prop::collection::vec(".{0,30}", 0..3),
        label in ".{0,20}",
    ) {
        let req = KeyRequest { label, scopes, expiration_date: date.clone() };
        if let Ok((record, key)) = ApiKey::mint(&req, "alice", vec![], "ua") {
            prop_assert_eq!(apikey::hash_of(&key), Some(record.hash.clone()));
            prop_assert!(!record.is_expired());
            let _ = record.parsed_scopes();
            let _ = record.public_view();
        }
        // The same date read back from storage.
        let stored = ApiKey {
            uuid: String::new(), label: String::new(), scopes: vec![], expiration_date: date,
            created_at: String::new(), creator_ua: String::new(), owner: String::new(),
            groups: vec![], hash: String::new(), minted_by: String::new(),
        };
        let _ = stored.is_expired();
    }

    #[test]
    fn hash_of_never_panics(s in ".{0,100}") {
        if let Some(h) = apikey::hash_of(&s) {
            prop_assert_eq!(h.len(), 64);
            prop_assert!(s.starts_with(apikey::PREFIX));
        }
    }
}
