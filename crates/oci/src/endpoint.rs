//! The `/v2` API surface parsed by hand into an [`Endpoint`].
//!
//! Paths are read from the right: the last segments say which resource
//! (`manifests/<ref>`, `blobs/<digest>`, `blobs/uploads/<id>`, `tags/list`,
//! `referrers/<digest>`) and everything before them is the repository name,
//! so names with any number of `/` work without a router. The raw path is
//! used as received: a percent escape is simply an invalid name.

use crate::digest::{Digest, DigestError};
use crate::error::ErrorCode;
use crate::name::{Reference, ReferenceError, RepoName, Tag};

/// The HTTP methods the API uses; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Other,
}

impl Method {
    pub fn parse(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// A resource of the API, before the method is considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    Blob(RepoName, Digest),
    Uploads(RepoName),
    Upload(RepoName, String),
    Referrers(RepoName, Digest),
}

/// One operation of the API: a route together with the method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Base,
    Catalog,
    ListTags {
        repo: RepoName,
    },
    GetManifest {
        repo: RepoName,
        reference: Reference,
        head: bool,
    },
    PutManifest {
        repo: RepoName,
        reference: Reference,
    },
    DeleteManifest {
        repo: RepoName,
        reference: Reference,
    },
    GetBlob {
        repo: RepoName,
        digest: Digest,
        head: bool,
    },
    DeleteBlob {
        repo: RepoName,
        digest: Digest,
    },
    /// POST to `blobs/uploads/`: a new session, a monolithic upload or a mount.
    StartUpload {
        repo: RepoName,
    },
    UploadStatus {
        repo: RepoName,
        id: String,
    },
    PatchUpload {
        repo: RepoName,
        id: String,
    },
    FinishUpload {
        repo: RepoName,
        id: String,
    },
    CancelUpload {
        repo: RepoName,
        id: String,
    },
    Referrers {
        repo: RepoName,
        digest: Digest,
    },
}

impl Endpoint {
    /// The repository the endpoint acts on, if any.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::ListTags { repo }
            | Endpoint::GetManifest { repo, .. }
            | Endpoint::PutManifest { repo, .. }
            | Endpoint::DeleteManifest { repo, .. }
            | Endpoint::GetBlob { repo, .. }
            | Endpoint::DeleteBlob { repo, .. }
            | Endpoint::StartUpload { repo }
            | Endpoint::UploadStatus { repo, .. }
            | Endpoint::PatchUpload { repo, .. }
            | Endpoint::FinishUpload { repo, .. }
            | Endpoint::CancelUpload { repo, .. }
            | Endpoint::Referrers { repo, .. } => Some(repo),
        }
    }
}

/// Why a request did not name an endpoint. Each maps to one error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Not a path of the API at all.
    NotFound,
    NameInvalid,
    DigestInvalid,
    DigestUnsupported,
    /// A tag that breaks the grammar, in a write.
    ReferenceInvalid,
    /// A tag that breaks the grammar, in a read: no such manifest can exist.
    ManifestUnknown,
    UploadUnknown,
    /// A known resource, but not with this method. Carries the allowed ones.
    MethodNotAllowed(&'static str),
}

impl RouteError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::NotFound => ErrorCode::NameUnknown,
            RouteError::NameInvalid => ErrorCode::NameInvalid,
            RouteError::DigestInvalid => ErrorCode::DigestInvalid,
            RouteError::DigestUnsupported => ErrorCode::Unsupported,
            RouteError::ReferenceInvalid => ErrorCode::TagInvalid,
            RouteError::ManifestUnknown => ErrorCode::ManifestUnknown,
            RouteError::UploadUnknown => ErrorCode::BlobUploadUnknown,
            RouteError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
        }
    }
}

fn digest(s: &str) -> Result<Digest, RouteError> {
    s.parse().map_err(|e| match e {
        DigestError::Invalid => RouteError::DigestInvalid,
        DigestError::Unsupported => RouteError::DigestUnsupported,
    })
}

fn repo(s: &str) -> Result<RepoName, RouteError> {
    RepoName::parse(s).ok_or(RouteError::NameInvalid)
}

/// Upload ids are Berth's own UUIDs; anything else is unknown before it
/// can reach storage.
fn upload_id(s: &str) -> Result<String, RouteError> {
    let ok =
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(RouteError::UploadUnknown)
    }
}

/// Parses the path of a request (which must start with `/v2`) into a route.
pub fn parse_route(path: &str) -> Result<Route, RouteError> {
    let rest = path.strip_prefix("/v2").ok_or(RouteError::NotFound)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Route::Base);
    }
    let rest = rest.strip_prefix('/').ok_or(RouteError::NotFound)?;
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let head = |k: usize| segs[..n - k].join("/");
    if n >= 3 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let name = repo(&head(3))?;
        return if segs[n - 1].is_empty() {
            Ok(Route::Uploads(name))
        } else {
            Ok(Route::Upload(name, upload_id(segs[n - 1])?))
        };
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Ok(Route::Uploads(repo(&head(2))?));
    }
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Ok(Route::Tags(repo(&head(2))?));
    }
    if n >= 2 {
        let last = segs[n - 1];
        match segs[n - 2] {
            "manifests" => {
                let name = repo(&head(2))?;
                let reference = Reference::parse(last).map_err(|e| match e {
                    ReferenceError::Invalid => RouteError::ReferenceInvalid,
                    ReferenceError::Digest(DigestError::Invalid) => RouteError::DigestInvalid,
                    ReferenceError::Digest(DigestError::Unsupported) => {
                        RouteError::DigestUnsupported
                    }
                })?;
                return Ok(Route::Manifest(name, reference));
            }
            "blobs" => return Ok(Route::Blob(repo(&head(2))?, digest(last)?)),
            "referrers" => return Ok(Route::Referrers(repo(&head(2))?, digest(last)?)),
            _ => {}
        }
    }
    Err(RouteError::NotFound)
}

/// Parses method and path into an endpoint.
pub fn parse(method: Method, path: &str) -> Result<Endpoint, RouteError> {
    use Method::*;
    let route = match parse_route(path) {
        // Nothing can be stored under a tag outside the grammar, so a read
        // of one is a read of a manifest that does not exist.
        Err(RouteError::ReferenceInvalid) if matches!(method, Get | Head) => {
            return Err(RouteError::ManifestUnknown)
        }
        other => other?,
    };
    let not_allowed = |allow| Err(RouteError::MethodNotAllowed(allow));
    match route {
        Route::Base => match method {
            Get | Head => Ok(Endpoint::Base),
            _ => not_allowed("GET, HEAD"),
        },
        Route::Catalog => match method {
            Get | Head => Ok(Endpoint::Catalog),
            _ => not_allowed("GET, HEAD"),
        },
        Route::Tags(repo) => match method {
            Get | Head => Ok(Endpoint::ListTags { repo }),
            _ => not_allowed("GET, HEAD"),
        },
        Route::Manifest(repo, reference) => match method {
            Get | Head => Ok(Endpoint::GetManifest {
                repo,
                reference,
                head: method == Head,
            }),
            Put => Ok(Endpoint::PutManifest { repo, reference }),
            Delete => Ok(Endpoint::DeleteManifest { repo, reference }),
            _ => not_allowed("GET, HEAD, PUT, DELETE"),
        },
        Route::Blob(repo, digest) => match method {
            Get | Head => Ok(Endpoint::GetBlob {
                repo,
                digest,
                head: method == Head,
            }),
            Delete => Ok(Endpoint::DeleteBlob { repo, digest }),
            _ => not_allowed("GET, HEAD, DELETE"),
        },
        Route::Uploads(repo) => match method {
            Post => Ok(Endpoint::StartUpload { repo }),
            _ => not_allowed("POST"),
        },
        Route::Upload(repo, id) => match method {
            Get | Head => Ok(Endpoint::UploadStatus { repo, id }),
            Patch => Ok(Endpoint::PatchUpload { repo, id }),
            Put => Ok(Endpoint::FinishUpload { repo, id }),
            Delete => Ok(Endpoint::CancelUpload { repo, id }),
            _ => not_allowed("GET, HEAD, PATCH, PUT, DELETE"),
        },
        Route::Referrers(repo, digest) => match method {
            Get | Head => Ok(Endpoint::Referrers { repo, digest }),
            _ => not_allowed("GET, HEAD"),
        },
    }
}

/// The most `tag` parameters a push by digest may carry (the spec asks for
/// at least 10; each costs a look at the store when authorized).
pub const MAX_TAG_PARAMS: usize = 32;

/// The tags a push by digest asks for with `tag` parameters (the
/// distribution-spec's `PUT /v2/<name>/manifests/<digest>?tag=..`), in
/// order, repeats dropped. `TagInvalid` for one that breaks the grammar,
/// `TooManyTags` past [`MAX_TAG_PARAMS`].
pub fn tag_params(query: &Query) -> Result<Vec<Tag>, ErrorCode> {
    let mut tags: Vec<Tag> = Vec::new();
    for raw in query.all("tag") {
        let tag = Tag::parse(raw).ok_or(ErrorCode::TagInvalid)?;
        if !tags.contains(&tag) {
            if tags.len() == MAX_TAG_PARAMS {
                return Err(ErrorCode::TooManyTags);
            }
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// Query parameters of a request, percent-decoded.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    /// The first value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a parameter, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(m: Method, p: &str) -> Endpoint {
        parse(m, p).unwrap_or_else(|e| panic!("{p}: {e:?}"))
    }

    #[test]
    fn tag_parameters() {
        let q = Query::parse(Some("tag=1.2&tag=latest&x=y&tag=1.2&tag=v%2B1"));
        assert_eq!(q.all("tag").count(), 4);
        assert_eq!(tag_params(&q), Err(ErrorCode::TagInvalid));
        let q = Query::parse(Some("tag=1.2&tag=latest&x=y&tag=1.2"));
        let tags = tag_params(&q).unwrap();
        let names: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        assert_eq!(names, ["1.2", "latest"]);
        assert_eq!(tag_params(&Query::parse(None)), Ok(Vec::new()));
        let many: Vec<String> = (0..=MAX_TAG_PARAMS).map(|i| format!("tag=t{i}")).collect();
        let q = Query::parse(Some(&many.join("&")));
        assert_eq!(tag_params(&q), Err(ErrorCode::TooManyTags));
        let q = Query::parse(Some(&many[..MAX_TAG_PARAMS].join("&")));
        assert_eq!(tag_params(&q).unwrap().len(), MAX_TAG_PARAMS);
    }

    #[test]
    fn reads_from_the_right() {
        assert_eq!(ok(Method::Get, "/v2/"), Endpoint::Base);
        assert_eq!(ok(Method::Get, "/v2"), Endpoint::Base);
        assert_eq!(ok(Method::Get, "/v2/_catalog"), Endpoint::Catalog);
        match ok(Method::Get, "/v2/a/manifests/b/manifests/latest") {
            Endpoint::GetManifest {
                repo,
                reference,
                head,
            } => {
                assert_eq!(repo.as_str(), "a/manifests/b");
                assert_eq!(reference.to_string(), "latest");
                assert!(!head);
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            ok(Method::Post, "/v2/a/b/blobs/uploads/"),
            Endpoint::StartUpload { .. }
        ));
        assert!(matches!(
            ok(Method::Post, "/v2/a/b/blobs/uploads"),
            Endpoint::StartUpload { .. }
        ));
        match ok(Method::Patch, "/v2/x/blobs/uploads/123e4567-e89b") {
            Endpoint::PatchUpload { repo, id } => {
                assert_eq!(repo.as_str(), "x");
                assert_eq!(id, "123e4567-e89b");
            }
            e => panic!("{e:?}"),
        }
        match ok(Method::Head, &format!("/v2/tags/list/blobs/{D}")) {
            Endpoint::GetBlob { repo, head, .. } => {
                assert_eq!(repo.as_str(), "tags/list");
                assert!(head);
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            ok(Method::Get, "/v2/a/b/c/tags/list"),
            Endpoint::ListTags { .. }
        ));
        assert!(matches!(
            ok(Method::Get, &format!("/v2/r/referrers/{D}")),
            Endpoint::Referrers { .. }
        ));
    }

    #[test]
    fn refuses() {
        assert_eq!(
            parse(Method::Get, "/v2/a/../../etc/manifests/x"),
            Err(RouteError::NameInvalid)
        );
        assert_eq!(
            parse(Method::Get, "/v2//etc/manifests/x"),
            Err(RouteError::NameInvalid)
        );
        assert_eq!(
            parse(Method::Get, "/v2/a%2Fb/manifests/x"),
            Err(RouteError::NameInvalid)
        );
        assert_eq!(
            parse(Method::Get, "/v2/Upper/manifests/x"),
            Err(RouteError::NameInvalid)
        );
        assert_eq!(
            parse(Method::Get, "/v2/a/blobs/sha256:zz"),
            Err(RouteError::DigestInvalid)
        );
        assert_eq!(
            parse(Method::Get, "/v2/a/blobs/md5:abc"),
            Err(RouteError::DigestUnsupported)
        );
        // A tag outside the grammar: a read finds nothing (404), a write
        // is refused (400 TAG_INVALID).
        for m in [Method::Get, Method::Head] {
            assert_eq!(
                parse(m, "/v2/a/manifests/-bad"),
                Err(RouteError::ManifestUnknown)
            );
        }
        for m in [Method::Put, Method::Delete] {
            assert_eq!(
                parse(m, "/v2/a/manifests/-bad"),
                Err(RouteError::ReferenceInvalid)
            );
        }
        assert_eq!(RouteError::ManifestUnknown.code().status(), 404);
        assert_eq!(RouteError::ReferenceInvalid.code().code(), "TAG_INVALID");
        assert_eq!(
            parse(Method::Get, "/v2/a/blobs/uploads/../x"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            parse(Method::Get, "/v2/a/blobs/uploads/a.b"),
            Err(RouteError::UploadUnknown)
        );
        assert_eq!(
            parse(Method::Get, "/v2/a/unknown"),
            Err(RouteError::NotFound)
        );
        assert_eq!(parse(Method::Get, "/v3/"), Err(RouteError::NotFound));
        assert!(matches!(
            parse(Method::Post, "/v2/a/manifests/x"),
            Err(RouteError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            parse(Method::Other, "/v2/"),
            Err(RouteError::MethodNotAllowed(_))
        ));
    }

    #[test]
    fn query() {
        let q = Query::parse(Some("mount=sha256%3Aab&from=a%2Fb&n=5"));
        assert_eq!(q.get("mount"), Some("sha256:ab"));
        assert_eq!(q.get("from"), Some("a/b"));
        assert_eq!(q.get("missing"), None);
    }
}
