//! The `/v2` API: parse, authorize, call the registry, respond.
//!
//! Handlers are thin. Every request is parsed once into an
//! [`Endpoint`](berth_oci::Endpoint), authorized once, and then handled by
//! one function per operation that only translates between HTTP and
//! `berth_core`.

use crate::app::App;
use crate::audit::{Event, Peer};
use crate::auth::{Access, LATEST};
use crate::error::{upload_range, ApiError};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_auth::Action;
use berth_auth::Identity;
use berth_core::listing::Page;
use berth_core::manifests::TagWrite;
use berth_core::sync::{BlobSource, Want};
use berth_core::uploads::Mount;
use berth_core::ByteStream;
use berth_core::CoreError;
use berth_oci::digest::DigestError;
use berth_oci::endpoint::{self, Method, Query};
use berth_oci::manifest::OCI_INDEX;
use berth_oci::range::{parse_content_range, parse_range, Resolved};
use berth_oci::{Algorithm, Digest, Endpoint, ErrorCode, Reference, RepoName};
use futures_util::TryStreamExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

type Result<T> = std::result::Result<T, ApiError>;

/// Entry point for every request under `/v2`.
pub async fn dispatch(State(app): State<App>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let method = Method::parse(parts.method.as_str());
    let mut resp = match endpoint::parse(method, parts.uri.path()) {
        Err(e) => ApiError::from(e).into_response(),
        Ok(ep) => {
            let query = Query::parse(parts.uri.query());
            let audited = audit_action(&ep).map(|action| (action, ep.clone()));
            // Only endpoints whose success proves the repository exists may
            // label metrics with it (a referrers query succeeds for any name).
            let ep_repo = matches!(
                ep,
                Endpoint::GetManifest { .. }
                    | Endpoint::PutManifest { .. }
                    | Endpoint::GetBlob { .. }
            )
            .then(|| ep.repo().map(|r| r.to_string()))
            .flatten();
            let download = matches!(ep, Endpoint::GetManifest { head: false, .. });
            let upload = matches!(ep, Endpoint::PutManifest { .. });
            // A changed tag list makes the web interface's row stale.
            let retagged = matches!(
                ep,
                Endpoint::PutManifest { .. } | Endpoint::DeleteManifest { .. }
            )
            .then(|| ep.repo().map(|r| r.to_string()))
            .flatten();
            let auth = crate::app::in_force(&parts.extensions, &app);
            let (resp, who) = match app
                .authorize(&auth, &ep, &query, &parts.method, &parts.headers)
                .await
            {
                Err(refused) => (refused.error.into_response(), refused.identity),
                Ok(access) => {
                    let r = handle(&app, &auth, ep, &access, &parts.headers, &query, body).await;
                    (
                        r.unwrap_or_else(IntoResponse::into_response),
                        Some(access.identity),
                    )
                }
            };
            if let (true, Some(repo)) = (resp.status().is_success(), retagged) {
                app.ui_cache.forget_repo(&repo);
            }
            if resp.status().is_success() {
                if let Some(repo) = ep_repo {
                    app.metrics.observe_repo(
                        repo,
                        started.elapsed().as_secs_f64(),
                        download,
                        upload,
                    );
                }
            }
            if let (Some(audit), Some((action, ep))) = (&app.audit, audited) {
                audit.record(audit_event(
                    action,
                    &ep,
                    &resp,
                    who.as_ref(),
                    parts.extensions.get::<Peer>(),
                ));
            }
            resp
        }
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// The audit name of a mutating endpoint; reads and chunks are not audited.
fn audit_action(ep: &Endpoint) -> Option<&'static str> {
    Some(match ep {
        Endpoint::PutManifest { .. } => "push manifest",
        Endpoint::DeleteManifest {
            reference: Reference::Tag(_),
            ..
        } => "delete tag",
        Endpoint::DeleteManifest { .. } => "delete manifest",
        Endpoint::DeleteBlob { .. } => "delete blob",
        Endpoint::StartUpload { .. } => "start upload",
        Endpoint::FinishUpload { .. } => "push blob",
        Endpoint::CancelUpload { .. } => "cancel upload",
        _ => return None,
    })
}

fn audit_event(
    action: &str,
    ep: &Endpoint,
    resp: &Response,
    who: Option<&Identity>,
    peer: Option<&Peer>,
) -> Event {
    let mut e = Event::new(action, resp.status().as_u16()).from(peer);
    if let Some(who) = who {
        e = e.who(who);
    }
    e.repository = ep.repo().map(|r| r.to_string());
    e.reference = match ep {
        Endpoint::PutManifest { reference, .. } | Endpoint::DeleteManifest { reference, .. } => {
            Some(reference.to_string())
        }
        Endpoint::DeleteBlob { digest, .. } => Some(digest.to_string()),
        Endpoint::FinishUpload { id, .. } | Endpoint::CancelUpload { id, .. } => Some(id.clone()),
        _ => None,
    };
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    e.digest = header(CONTENT_DIGEST);
    e.tags = header(OCI_TAG);
    e
}

async fn handle(
    app: &App,
    auth: &crate::auth::Auth,
    ep: Endpoint,
    access: &Access,
    headers: &HeaderMap,
    query: &Query,
    body: Body,
) -> Result<Response> {
    let reg = &app.registry;
    match ep {
        Endpoint::Base => Ok(json_response(
            StatusCode::OK,
            "application/json",
            "{}".into(),
        )),
        Endpoint::Catalog => {
            let (n, last) = pagination(query)?;
            // Only what the caller may read; the rule comes from the policy.
            let (policy, who) = (&auth.policy, &access.identity);
            let page = reg
                .catalog(n, last, |repo| {
                    policy.decide(who, Action::Read, repo).allowed
                })
                .await?;
            let body = serde_json::json!({ "repositories": page.items });
            let link = next_link("/v2/_catalog", n, &page);
            Ok(with_link(
                json_response(StatusCode::OK, "application/json", body.to_string()),
                link,
            ))
        }
        Endpoint::ListTags { repo } => {
            let (n, last) = pagination(query)?;
            let page = reg.list_tags(&repo, n, last).await?;
            let body = serde_json::json!({ "name": repo.as_str(), "tags": page.items });
            let link = next_link(&format!("/v2/{repo}/tags/list"), n, &page);
            Ok(with_link(
                json_response(StatusCode::OK, "application/json", body.to_string()),
                link,
            ))
        }
        Endpoint::GetManifest {
            repo,
            reference,
            head,
        } => {
            // Pull-through: fetch or revalidate first (a no-op for
            // repositories no sync rule maps).
            reg.sync_manifest(&repo, &reference).await?;
            let (digest, media_type, size, body) = if head {
                let (digest, media_type) = reg.resolve_manifest(&repo, &reference).await?;
                let size = reg.manifest_size(&digest).await?;
                (digest, media_type, size, Body::empty())
            } else {
                let m = reg.get_manifest(&repo, &reference).await?;
                let size = m.body.len() as u64;
                (m.digest, m.media_type, size, Body::from(m.body))
            };
            let mut resp = Response::new(body);
            let h = resp.headers_mut();
            set(h, header::CONTENT_TYPE, &media_type);
            set(h, header::CONTENT_LENGTH, &size.to_string());
            set(h, CONTENT_DIGEST, digest.as_str());
            set(h, header::ETAG, &format!("\"{digest}\""));
            Ok(resp)
        }
        Endpoint::PutManifest { repo, reference } => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
            // A push by digest may tag too (`?tag=`); a push by tag
            // ignores them (the spec defines them for digests only).
            let tags = match &reference {
                Reference::Digest(_) => endpoint::tag_params(query).map_err(ApiError::code)?,
                Reference::Tag(_) => Vec::new(),
            };
            let limit = reg.options().max_manifest_size;
            let bytes = read_manifest_body(body, headers, limit).await?;
            let pushed = match &reference {
                Reference::Digest(digest) if !tags.is_empty() => {
                    let tags: Vec<_> = tags
                        .into_iter()
                        .map(|t| {
                            let write = if t.as_str() == LATEST {
                                TagWrite::Overwrite
                            } else {
                                access.tag_write
                            };
                            (t, write)
                        })
                        .collect();
                    reg.put_manifest_tagged(&repo, digest, content_type.as_deref(), bytes, &tags)
                        .await
                }
                _ => {
                    reg.put_manifest(
                        &repo,
                        &reference,
                        content_type.as_deref(),
                        bytes,
                        access.tag_write,
                    )
                    .await
                }
            }
            .map_err(|e| match e {
                // Another push created the tag first: the same answer as
                // a push to a tag that existed when it was authorized.
                CoreError::TagExists(_) => {
                    auth.refusal(&access.identity, Action::Update, repo.as_str())
                }
                e => e.into(),
            })?;
            let mut resp = empty(StatusCode::CREATED);
            let h = resp.headers_mut();
            set(
                h,
                header::LOCATION,
                &format!("/v2/{repo}/manifests/{}", pushed.digest),
            );
            set(h, CONTENT_DIGEST, pushed.digest.as_str());
            if let Some(subject) = pushed.subject {
                set(h, OCI_SUBJECT, subject.as_str());
            }
            if matches!(reference, Reference::Digest(_)) && !pushed.tags.is_empty() {
                let names: Vec<&str> = pushed.tags.iter().map(|t| t.as_str()).collect();
                set(h, OCI_TAG, &names.join(", "));
            }
            Ok(resp)
        }
        Endpoint::DeleteManifest { repo, reference } => {
            reg.delete_manifest(&repo, &reference).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        Endpoint::GetBlob { repo, digest, head } => {
            get_blob(app, &repo, &digest, head, headers).await
        }
        Endpoint::DeleteBlob { repo, digest } => {
            reg.delete_blob(&repo, &digest).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        Endpoint::StartUpload { repo } => start_upload(app, &repo, access, query, body).await,
        Endpoint::UploadStatus { repo, id } => {
            let state = reg.upload_status(&repo, &id).await?;
            Ok(upload_response(
                StatusCode::NO_CONTENT,
                &repo,
                &state.id,
                state.size,
            ))
        }
        Endpoint::PatchUpload { repo, id } => {
            let range = chunk_range(headers)?;
            let state = reg.append_upload(&repo, &id, range, stream(body)).await?;
            Ok(upload_response(
                StatusCode::ACCEPTED,
                &repo,
                &state.id,
                state.size,
            ))
        }
        Endpoint::FinishUpload { repo, id } => {
            let digest = required_digest(query)?;
            let range = chunk_range(headers)?;
            let body = has_body(headers, &body)?.then(|| stream(body));
            reg.finish_upload(&repo, &id, &digest, range, body).await?;
            Ok(blob_created(&repo, &digest))
        }
        Endpoint::CancelUpload { repo, id } => {
            reg.cancel_upload(&repo, &id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Endpoint::Referrers { repo, digest } => {
            let filter = query.get("artifactType").filter(|t| !t.is_empty());
            // `n` and `last` as for tags (the spec leaves referrers' pages
            // to the registry; clients follow the Link).
            let (n, after) = pagination(query)?;
            let limit = n.unwrap_or(REFERRERS_PAGE).min(REFERRERS_PAGE);
            let (manifests, next) = reg.referrers(&repo, &digest, filter, after, limit).await?;
            let body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": manifests,
            });
            let mut resp = json_response(StatusCode::OK, OCI_INDEX, body.to_string());
            if filter.is_some() {
                set(resp.headers_mut(), FILTERS_APPLIED, "artifactType");
            }
            // More follow: the spec's Link header, to an opaque URL.
            let link = next.map(|last| {
                let mut q = form_urlencoded::Serializer::new(String::new());
                if let Some(n) = n {
                    q.append_pair("n", &n.to_string());
                }
                q.append_pair("last", &last);
                if let Some(t) = filter {
                    q.append_pair("artifactType", t);
                }
                format!(
                    "</v2/{repo}/referrers/{digest}?{}>; rel=\"next\"",
                    q.finish()
                )
            });
            Ok(with_link(resp, link))
        }
    }
}

async fn get_blob(
    app: &App,
    repo: &RepoName,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response> {
    let range = if head {
        None
    } else {
        headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_range)
    };
    let size = match app.registry.blob_size(repo, digest).await {
        Err(CoreError::BlobUnknown) => {
            let want = match (head, range.is_some()) {
                (true, _) => Want::Head,
                (false, true) => Want::Whole,
                (false, false) => Want::Stream,
            };
            match app.registry.sync_blob(repo, digest, want).await? {
                None => return Err(CoreError::BlobUnknown.into()),
                Some(BlobSource::Local) => app.registry.blob_size(repo, digest).await?,
                Some(BlobSource::Size(size)) => {
                    return Ok(blob_response(
                        Body::empty(),
                        StatusCode::OK,
                        Some(size),
                        digest,
                    ))
                }
                Some(BlobSource::Arriving { size, body }) => {
                    return Ok(blob_response(
                        Body::from_stream(body),
                        StatusCode::OK,
                        size,
                        digest,
                    ))
                }
            }
        }
        other => other?,
    };
    let (status, start, end) = match range.map(|r| r.resolve(size)) {
        None => (StatusCode::OK, 0, size),
        Some(Resolved::Partial { start, end }) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(Resolved::Unsatisfiable) => {
            // Not an upload error, and the spec's JSON codes (which a 4XX
            // body in JSON must use) name none for a read: plain text.
            let mut resp = (
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("requested range not satisfiable: the blob is {size} bytes\n"),
            )
                .into_response();
            set(
                resp.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            return Ok(resp);
        }
    };
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(app.registry.read_blob(digest, start, end).await?)
    };
    let mut resp = blob_response(body, status, Some(end - start), digest);
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            resp.headers_mut(),
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    Ok(resp)
}

/// A blob's response; without a length (a blob still arriving from an
/// upstream that did not say), the body is chunked.
fn blob_response(body: Body, status: StatusCode, length: Option<u64>, digest: &Digest) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    set(h, header::CONTENT_TYPE, "application/octet-stream");
    if let Some(n) = length {
        set(h, header::CONTENT_LENGTH, &n.to_string());
    }
    set(h, CONTENT_DIGEST, digest.as_str());
    set(h, header::ETAG, &format!("\"{digest}\""));
    set(h, header::ACCEPT_RANGES, "bytes");
    resp
}

async fn start_upload(
    app: &App,
    repo: &RepoName,
    access: &Access,
    query: &Query,
    body: Body,
) -> Result<Response> {
    let reg = &app.registry;
    // The algorithm the blob's digest will use (end-4c): refused at once
    // when Berth does not compute it, not after the whole blob was sent.
    let algorithm = match query.get("digest-algorithm") {
        None => Algorithm::Sha256,
        Some(name) => Algorithm::named(name).ok_or_else(|| {
            ApiError::with_detail(
                ErrorCode::Unsupported,
                format!("digest algorithm {name:?} is not supported (sha256, sha512)"),
            )
        })?,
    };
    if let Some(mount) = query.get("mount") {
        let digest = parse_digest(mount)?;
        let from = match query.get("from") {
            None | Some("") => None,
            Some(f) => {
                Some(RepoName::parse(f).ok_or_else(|| ApiError::code(ErrorCode::NameInvalid))?)
            }
        };
        // What the authorization step allowed decides whether to try at all.
        let allowed = match &from {
            Some(_) => access.mount_source_readable,
            None => access.mount_anywhere,
        };
        if !allowed {
            let state = reg.start_upload(repo).await?;
            return Ok(upload_response(
                StatusCode::ACCEPTED,
                repo,
                &state.id,
                state.size,
            ));
        }
        return match reg.mount(repo, &digest, from.as_ref()).await? {
            Mount::Mounted => Ok(blob_created(repo, &digest)),
            Mount::Started(state) => Ok(upload_response(
                StatusCode::ACCEPTED,
                repo,
                &state.id,
                state.size,
            )),
        };
    }
    if let Some(d) = query.get("digest") {
        let digest = parse_digest(d)?;
        reg.upload_whole(repo, &digest, stream(body)).await?;
        return Ok(blob_created(repo, &digest));
    }
    let state = reg.start_upload_for(repo, algorithm).await?;
    Ok(upload_response(
        StatusCode::ACCEPTED,
        repo,
        &state.id,
        state.size,
    ))
}

/// Reads a manifest body of at most `limit` bytes. A larger one is read
/// to its end (up to [`DRAIN_LIMIT`]) before the refusal, so that the client,
/// still sending, reads a 413 instead of a reset connection.
async fn read_manifest_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<bytes::Bytes> {
    let too_large = || ApiError::from(berth_core::CoreError::ManifestTooLarge { limit });
    let declared = content_length(headers)?;
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    if declared.is_some_and(|n| n > limit as u64) {
        // Read and drop, never keep.
        let mut stream = body.into_data_stream();
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut stream).await {
            seen += chunk.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut total: u64 = 0;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk
            .map_err(|e| ApiError::with_detail(ErrorCode::ManifestInvalid, format!("body: {e}")))?;
        total += chunk.len() as u64;
        if total > DRAIN_LIMIT {
            return Err(too_large());
        }
        if total <= limit as u64 {
            buf.extend_from_slice(&chunk);
        }
    }
    if total > limit as u64 {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// Most bytes of an oversized request read (and discarded) before refusing.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

fn stream(body: Body) -> ByteStream {
    Box::pin(TryStreamExt::map_err(
        body.into_data_stream(),
        std::io::Error::other,
    ))
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

fn json_response(status: StatusCode, content_type: &str, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    set(resp.headers_mut(), header::CONTENT_TYPE, content_type);
    resp
}

fn upload_response(status: StatusCode, repo: &RepoName, id: &str, size: u64) -> Response {
    let mut resp = empty(status);
    let h = resp.headers_mut();
    set(
        h,
        header::LOCATION,
        &format!("/v2/{repo}/blobs/uploads/{id}"),
    );
    set(h, header::RANGE, &upload_range(size));
    set(h, UPLOAD_UUID, id);
    resp
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    set(h, header::LOCATION, &format!("/v2/{repo}/blobs/{digest}"));
    set(h, CONTENT_DIGEST, digest.as_str());
    resp
}

fn parse_digest(s: &str) -> Result<Digest> {
    s.parse().map_err(|e| match e {
        DigestError::Invalid => ApiError::with_detail(ErrorCode::DigestInvalid, "malformed digest"),
        DigestError::Unsupported => {
            ApiError::with_detail(ErrorCode::Unsupported, "digest algorithm not supported")
        }
    })
}

fn required_digest(query: &Query) -> Result<Digest> {
    match query.get("digest") {
        Some(d) => parse_digest(d),
        None => Err(ApiError::with_detail(
            ErrorCode::DigestInvalid,
            "the digest parameter is required",
        )),
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::with_detail(ErrorCode::SizeInvalid, "bad Content-Length")),
    }
}

/// Whether the request carries a body worth appending. HTTP/2 streams a
/// body without Content-Length or Transfer-Encoding, so the body is asked.
fn has_body(headers: &HeaderMap, body: &Body) -> Result<bool> {
    use http_body::Body as _;
    Ok(match content_length(headers)? {
        Some(n) => n > 0,
        None => !body.is_end_stream(),
    })
}

/// The chunk position declared by `Content-Range`, checked against
/// `Content-Length` when both are sent.
fn chunk_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let (start, end) = v
        .to_str()
        .ok()
        .and_then(parse_content_range)
        .ok_or_else(|| ApiError::with_detail(ErrorCode::RangeInvalid, "malformed Content-Range"))?;
    if let Some(len) = content_length(headers)? {
        if Some(len) != (end - start).checked_add(1) {
            return Err(ApiError::with_detail(
                ErrorCode::SizeInvalid,
                format!("Content-Range {start}-{end} does not match Content-Length {len}"),
            ));
        }
    }
    Ok(Some((start, end)))
}

/// Referrers in one response; more are a `Link` away.
const REFERRERS_PAGE: usize = 1000;

fn pagination(query: &Query) -> Result<(Option<usize>, Option<&str>)> {
    let n = match query.get("n") {
        None | Some("") => None,
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            ApiError::with_detail(ErrorCode::Unsupported, "n must be a non-negative integer")
        })?),
    };
    Ok((n, query.get("last").filter(|l| !l.is_empty())))
}

fn next_link(path: &str, n: Option<usize>, page: &Page) -> Option<String> {
    let (Some(n), Some(last)) = (n, page.items.last()) else {
        return None;
    };
    page.more
        .then(|| format!("<{path}?n={n}&last={last}>; rel=\"next\""))
}

fn with_link(mut resp: Response, link: Option<String>) -> Response {
    if let Some(link) = link {
        set(resp.headers_mut(), header::LINK, &link);
    }
    resp
}
