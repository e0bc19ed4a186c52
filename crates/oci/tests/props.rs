//! Property tests of the OCI vocabulary: whatever a client sends, parsing
//! never panics, and what is printed parses back to the same value.
//!
//! Short run: `cargo test -p berth-oci --test props` (256 cases each, or
//! `PROPTEST_CASES`); the long run and its result are in README ("Fuzzing").

use berth_oci::endpoint::{self, Method, Query};
use berth_oci::manifest;
use berth_oci::name::{MAX_NAME_LEN, MAX_TAG_LEN};
use berth_oci::range::{self, ByteRange, Resolved};
use berth_oci::{Algorithm, Digest, Endpoint, Reference, RepoName, Tag};
use proptest::prelude::*;

/// A path component of a repository name, by the spec's grammar.
const COMPONENT: &str = "[a-z0-9]{1,6}(([._]|__|-{1,3})[a-z0-9]{1,6}){0,2}";

fn repo_name() -> impl Strategy<Value = String> {
    prop::collection::vec(COMPONENT, 1..6)
        .prop_map(|c| c.join("/"))
        .prop_filter("too long", |s| s.len() <= MAX_NAME_LEN)
}

fn tag() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
}

fn digest() -> impl Strategy<Value = Digest> {
    (any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(big, data)| {
        let alg = if big {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        };
        Digest::of(alg, &data)
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Get),
        Just(Method::Head),
        Just(Method::Post),
        Just(Method::Put),
        Just(Method::Patch),
        Just(Method::Delete),
        Just(Method::Other),
    ]
}

/// Strings made of the characters that matter to the parsers, so that
/// random input reaches past the first check.
fn pathish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[a-z0-9]{1,4}",
            2 => Just("/".to_owned()),
            1 => Just("v2".to_owned()),
            1 => Just("manifests".to_owned()),
            1 => Just("blobs".to_owned()),
            1 => Just("uploads".to_owned()),
            1 => Just("tags/list".to_owned()),
            1 => Just("referrers".to_owned()),
            1 => Just("_catalog".to_owned()),
            1 => Just("sha256:".to_owned()),
            1 => "[-._:%@A-Z]{1,3}",
            1 => ".{0,4}",
        ],
        0..16,
    )
    .prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn digest_parse_never_panics(s in ".{0,200}") {
        let _ = s.parse::<Digest>();
    }

    #[test]
    fn digest_grammar_strings_never_panic(alg in "[a-z0-9+._-]{0,12}", enc in "[a-zA-Z0-9=_-]{0,140}") {
        if let Ok(d) = format!("{alg}:{enc}").parse::<Digest>() {
            prop_assert_eq!(d.as_str(), format!("{alg}:{enc}"));
            prop_assert_eq!(d.hex().len(), d.algorithm().hex_len());
        }
    }

    #[test]
    fn digest_round_trips(d in digest()) {
        let again: Digest = d.to_string().parse().unwrap();
        prop_assert_eq!(&again, &d);
        let json = serde_json::to_string(&d).unwrap();
        prop_assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn valid_hex_digest_round_trips(big in any::<bool>(), hex in "[0-9a-f]{128}") {
        let (alg, hex) = if big { ("sha512", &hex[..]) } else { ("sha256", &hex[..64]) };
        let text = format!("{alg}:{hex}");
        let d: Digest = text.parse().unwrap();
        prop_assert_eq!(d.as_str(), text.as_str());
        prop_assert_eq!(d.hex(), hex);
        prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn name_parse_never_panics(s in ".{0,300}") {
        if let Some(n) = RepoName::parse(&s) {
            // Safe as a storage path: no empty, dot or escaping component.
            prop_assert!(n.as_str().split('/').all(|c| !c.is_empty() && !c.starts_with('.')));
            prop_assert!(!n.as_str().contains('%') && !n.as_str().contains('\\'));
        }
    }

    #[test]
    fn valid_names_round_trip(s in repo_name()) {
        let n = RepoName::parse(&s).unwrap();
        prop_assert_eq!(n.as_str(), s.as_str());
        prop_assert_eq!(RepoName::parse(&n.to_string()).unwrap(), n);
    }

    #[test]
    fn name_like_strings_keep_the_invariant(s in "[a-z0-9./_-]{0,40}") {
        if let Some(n) = RepoName::parse(&s) {
            prop_assert!(!n.as_str().contains(".."));
            prop_assert!(!n.as_str().contains("//"));
            prop_assert!(!n.as_str().starts_with('/') && !n.as_str().ends_with('/'));
            prop_assert!(n.as_str().split('/').all(|c| !c.starts_with(['.', '_', '-'])));
        }
    }

    #[test]
    fn tag_parse_never_panics(s in ".{0,200}") {
        if let Some(t) = Tag::parse(&s) {
            prop_assert!(t.as_str().len() <= MAX_TAG_LEN);
            prop_assert!(!t.as_str().contains(['/', ':']));
        }
    }

    #[test]
    fn valid_tags_round_trip(s in tag()) {
        let t = Tag::parse(&s).unwrap();
        prop_assert_eq!(t.as_str(), s.as_str());
        prop_assert_eq!(Tag::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn references_round_trip(t in tag(), d in digest(), pick in any::<bool>()) {
        let text = if pick { t } else { d.to_string() };
        let r = Reference::parse(&text).unwrap();
        prop_assert_eq!(r.to_string(), text.clone());
        prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn reference_parse_never_panics(s in ".{0,200}") {
        let _ = Reference::parse(&s);
    }

    #[test]
    fn range_parse_never_panics(s in ".{0,60}", t in "(bytes=)?[0-9 ,=-]{0,50}") {
        let _ = range::parse_range(&s);
        let _ = range::parse_range(&t);
        let _ = range::parse_content_range(&s);
        let _ = range::parse_content_range(&t);
    }

    #[test]
    fn parsed_ranges_stay_within_bounds(
        a in any::<u64>(), b in any::<u64>(), size in any::<u64>(), form in 0u8..3, small in any::<bool>()
    ) {
        let (a, b, size) = if small { (a % 64, b % 64, size % 64) } else { (a, b, size) };
        let header = match form {
            0 => format!("bytes={a}-{b}"),
            1 => format!("bytes={a}-"),
            _ => format!("bytes=-{b}"),
        };
        let r = range::parse_range(&header);
        prop_assert!(r.is_some(), "{header}");
        let r = r.unwrap();
        if form == 0 && a > b {
            // Ends before it starts: kept, and never satisfiable.
            prop_assert_eq!(r.resolve(size), Resolved::Unsatisfiable);
        }
        match form {
            0 => prop_assert_eq!(r, ByteRange::FromTo(a, b)),
            1 => prop_assert_eq!(r, ByteRange::From(a)),
            _ => prop_assert_eq!(r, ByteRange::Suffix(b)),
        }
        match r.resolve(size) {
            Resolved::Partial { start, end } => {
                prop_assert!(start < end && end <= size);
                if let ByteRange::FromTo(s, e) = r {
                    prop_assert_eq!(start, s);
                    prop_assert!(end - start <= e - s + 1);
                }
                if let ByteRange::Suffix(n) = r {
                    prop_assert!(end - start <= n);
                    prop_assert_eq!(end, size);
                }
            }
            Resolved::Unsatisfiable => {
                let first = match r {
                    ByteRange::FromTo(s, e) if s > e => size,
                    ByteRange::FromTo(s, _) | ByteRange::From(s) => s,
                    ByteRange::Suffix(n) => if n == 0 { size } else { size.saturating_sub(n) },
                };
                prop_assert!(first >= size);
            }
        }
    }

    #[test]
    fn content_ranges_round_trip(a in any::<u64>(), b in any::<u64>(), form in 0u8..3) {
        let header = match form {
            0 => format!("{a}-{b}"),
            1 => format!("bytes {a}-{b}/*"),
            _ => format!("bytes={a}-{b}"),
        };
        match range::parse_content_range(&header) {
            Some((s, e)) => {
                prop_assert_eq!((s, e), (a, b));
                // `end + 1` is a size.
                prop_assert!(s <= e && e.checked_add(1).is_some());
            }
            None => prop_assert!(a > b || b == u64::MAX),
        }
    }

    #[test]
    fn endpoint_parse_never_panics(m in method(), p in pathish(), raw in ".{0,80}") {
        let _ = endpoint::parse(m, &format!("/v2/{p}"));
        let _ = endpoint::parse(m, &p);
        let _ = endpoint::parse(m, &raw);
        let _ = endpoint::parse(Method::parse(&raw), &format!("/v2/{raw}"));
    }

    #[test]
    fn query_parse_never_panics(raw in ".{0,120}", key in ".{0,8}") {
        let q = Query::parse(Some(&raw));
        let _ = q.get(&key);
        let _ = q.get("n");
        let _ = q.get("last");
    }

    #[test]
    fn endpoints_built_from_valid_parts_parse_back(
        name in repo_name(), t in tag(), d in digest(), id in "[a-zA-Z0-9-]{1,64}", which in 0u8..7, head in any::<bool>()
    ) {
        let repo = RepoName::parse(&name).unwrap();
        let get = if head { Method::Head } else { Method::Get };
        let (m, path, want) = match which {
            0 => (get, format!("/v2/{name}/manifests/{t}"), Endpoint::GetManifest {
                repo, reference: Reference::Tag(Tag::parse(&t).unwrap()), head }),
            1 => (Method::Put, format!("/v2/{name}/manifests/{d}"), Endpoint::PutManifest {
                repo, reference: Reference::Digest(d) }),
            2 => (get, format!("/v2/{name}/blobs/{d}"), Endpoint::GetBlob { repo, digest: d, head }),
            3 => (Method::Post, format!("/v2/{name}/blobs/uploads/"), Endpoint::StartUpload { repo }),
            4 => (Method::Patch, format!("/v2/{name}/blobs/uploads/{id}"), Endpoint::PatchUpload { repo, id }),
            5 => (Method::Get, format!("/v2/{name}/tags/list"), Endpoint::ListTags { repo }),
            _ => (Method::Get, format!("/v2/{name}/referrers/{d}"), Endpoint::Referrers { repo, digest: d }),
        };
        prop_assert_eq!(endpoint::parse(m, &path), Ok(want));
    }

    #[test]
    fn manifest_parse_never_panics(body in prop::collection::vec(any::<u8>(), 0..512), ct in prop::option::of(".{0,80}")) {
        let _ = manifest::parse(&body, ct.as_deref());
    }
}

/// Arbitrary JSON of bounded size, biased toward manifest field names.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        digest().prop_map(|d| Value::String(d.to_string())),
        Just(Value::String(manifest::OCI_MANIFEST.into())),
        Just(Value::String(manifest::OCI_INDEX.into())),
        Just(Value::String(manifest::DOCKER_LIST.into())),
        Just(Value::from(2)),
    ];
    let key = prop_oneof![
        Just("schemaVersion".to_owned()),
        Just("mediaType".to_owned()),
        Just("artifactType".to_owned()),
        Just("config".to_owned()),
        Just("layers".to_owned()),
        Just("manifests".to_owned()),
        Just("subject".to_owned()),
        Just("annotations".to_owned()),
        Just("digest".to_owned()),
        Just("size".to_owned()),
        Just("urls".to_owned()),
        Just("platform".to_owned()),
        "[a-zA-Z]{1,8}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn descriptor(media_type: &'static str) -> impl Strategy<Value = serde_json::Value> {
    (digest(), any::<u64>()).prop_map(
        move |(d, size)| serde_json::json!({ "mediaType": media_type, "digest": d, "size": size }),
    )
}

proptest! {
    #[test]
    fn manifest_shaped_json_never_panics(v in json(), ct in prop_oneof![
        Just(None),
        Just(Some(manifest::OCI_MANIFEST)),
        Just(Some(manifest::OCI_INDEX)),
        Just(Some(manifest::DOCKER_SCHEMA1)),
        Just(Some("text/plain")),
    ]) {
        let body = serde_json::to_vec(&v).unwrap();
        let _ = manifest::parse(&body, ct);
    }

    /// A well-formed image manifest is read with every descriptor, in order.
    #[test]
    fn image_manifests_read_their_descriptors(
        config in descriptor("application/vnd.oci.image.config.v1+json"),
        layers in prop::collection::vec(descriptor("application/vnd.oci.image.layer.v1.tar+gzip"), 0..8),
        subject in prop::option::of(descriptor(manifest::OCI_MANIFEST)),
    ) {
        let mut v = serde_json::json!({
            "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
            "config": config, "layers": layers,
        });
        if let Some(s) = &subject {
            v["subject"] = s.clone();
        }
        let m = manifest::parse(&serde_json::to_vec(&v).unwrap(), Some(manifest::OCI_MANIFEST)).unwrap();
        prop_assert_eq!(m.kind, manifest::Kind::Image);
        prop_assert_eq!(m.blobs.len(), layers.len() + 1);
        prop_assert_eq!(serde_json::to_value(&m.blobs[0]).unwrap(), config);
        for (got, want) in m.blobs[1..].iter().zip(&layers) {
            prop_assert_eq!(&serde_json::to_value(got).unwrap(), want);
        }
        prop_assert_eq!(m.subject.map(|s| serde_json::to_value(s).unwrap()), subject);
    }

    /// A well-formed index is read with every child, in order.
    #[test]
    fn indexes_read_their_children(
        children in prop::collection::vec(descriptor(manifest::OCI_MANIFEST), 0..8),
        docker in any::<bool>(),
    ) {
        let mt = if docker { manifest::DOCKER_LIST } else { manifest::OCI_INDEX };
        let v = serde_json::json!({ "schemaVersion": 2, "mediaType": mt, "manifests": children });
        let m = manifest::parse(&serde_json::to_vec(&v).unwrap(), None).unwrap();
        prop_assert_eq!(m.kind, manifest::Kind::Index);
        prop_assert_eq!(m.media_type.as_str(), mt);
        prop_assert_eq!(m.manifests.len(), children.len());
        for (got, want) in m.manifests.iter().zip(&children) {
            prop_assert_eq!(&serde_json::to_value(got).unwrap(), want);
        }
    }
}
