//! The one place where errors become HTTP responses.
//!
//! Every handler returns [`ApiError`] on failure; its `IntoResponse` picks
//! the status and OCI error code (from `berth_oci::ErrorCode`, which owns
//! the status of each code) and writes the distribution-spec JSON body.
//! Internal errors are logged here with their detail and answered with a
//! generic message: `Display` of an internal error never reaches the wire.

use axum::response::{IntoResponse, Response};
use berth_core::CoreError;
use berth_oci::endpoint::RouteError;
use berth_oci::ErrorCode;
use http::{header, HeaderValue, StatusCode};

/// A failed request.
#[derive(Debug)]
pub enum ApiError {
    /// A registry error with a detail safe to show the client.
    Oci {
        code: ErrorCode,
        detail: Option<String>,
        headers: Vec<(header::HeaderName, String)>,
    },
    /// Something broke on our side: logged, answered with 500.
    Internal(String),
}

impl ApiError {
    pub fn code(code: ErrorCode) -> ApiError {
        ApiError::Oci {
            code,
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_detail(code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError::Oci {
            code,
            detail: Some(detail.into()),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> ApiError {
        if let ApiError::Oci { headers, .. } = &mut self {
            headers.push((name, value.into()));
        }
        self
    }
}

/// The `Range` header value for an upload holding `size` bytes.
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        let code = e.code();
        match e {
            RouteError::MethodNotAllowed(allow) => {
                ApiError::with_detail(code, "method not allowed on this endpoint")
                    .header(header::ALLOW, allow)
            }
            RouteError::NotFound => ApiError::with_detail(code, "no such endpoint or repository"),
            RouteError::ReferenceInvalid => ApiError::with_detail(code, "invalid tag"),
            RouteError::DigestUnsupported => {
                ApiError::with_detail(code, "digest algorithm not supported")
            }
            _ => ApiError::code(code),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        use CoreError as C;
        use ErrorCode as E;
        match e {
            C::BlobUnknown => ApiError::code(E::BlobUnknown),
            C::UploadUnknown => ApiError::code(E::BlobUploadUnknown),
            C::UploadInvalid(d) => ApiError::with_detail(E::BlobUploadInvalid, d),
            C::ChunkOutOfOrder { size } => {
                ApiError::with_detail(E::RangeInvalid, format!("upload holds {size} bytes"))
                    .header(header::RANGE, upload_range(size))
            }
            C::DigestMismatch { declared, computed } => ApiError::with_detail(
                E::DigestInvalid,
                format!("declared {declared}, content is {computed}"),
            ),
            C::DigestInvalid(d) => ApiError::with_detail(E::DigestInvalid, d),
            C::Unsupported(d) => ApiError::with_detail(E::Unsupported, d),
            C::SizeInvalid(d) => ApiError::with_detail(E::SizeInvalid, d),
            C::ManifestUnknown => ApiError::code(E::ManifestUnknown),
            C::ManifestInvalid(d) => ApiError::with_detail(E::ManifestInvalid, d),
            C::ManifestBlobUnknown(d) => {
                ApiError::with_detail(E::ManifestBlobUnknown, d.to_string())
            }
            C::ManifestTooLarge { limit } => ApiError::with_detail(
                E::ManifestTooLarge,
                format!("manifests are limited to {limit} bytes"),
            ),
            C::NameUnknown => ApiError::code(E::NameUnknown),
            // The same answer as a push to a tag that existed when it was
            // authorized: moving it needs `update`.
            C::TagExists(tag) => ApiError::with_detail(
                E::Denied,
                format!("tag {tag} exists; moving it needs the update right"),
            ),
            C::Body(e) => {
                ApiError::with_detail(E::BlobUploadInvalid, format!("request body failed: {e}"))
            }
            // The detail names upstream URLs and error chains: the log's,
            // never the client's.
            C::Upstream(d) => {
                tracing::warn!(detail = %d, "pull-through request failed");
                ApiError::with_detail(
                    E::UpstreamFailed,
                    "the upstream registry failed or sent bad data",
                )
            }
            C::Storage(e) if storage_full(&e) => {
                note_storage_full();
                ApiError::with_detail(
                    E::StorageFull,
                    "storage is full: nothing of this request was kept; try again later",
                )
            }
            C::Storage(e) => ApiError::Internal(e.to_string()),
            C::TooManyUploads => ApiError::with_detail(
                E::TooManyRequests,
                "too many uploads are open on this registry; retry later",
            )
            .header(header::RETRY_AFTER, "60"),
            C::UploadBusy => ApiError::with_detail(
                E::TooManyRequests,
                "the upload is busy with another request; retry later",
            )
            .header(header::RETRY_AFTER, "5"),
            C::UpstreamBusy => ApiError::with_detail(
                E::TooManyRequests,
                "too many fetches from the upstream registry at once; retry later",
            )
            .header(header::RETRY_AFTER, "5"),
            C::Busy => ApiError::Internal("a collection pass holds the store".into()),
            C::Corrupt(d) => {
                ApiError::Internal(format!("stored content of {d} is corrupt; run scrub"))
            }
        }
    }
}

/// Whether a storage error means the disk (or the quota) is full.
fn storage_full(e: &berth_storage::StorageError) -> bool {
    match e {
        berth_storage::StorageError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ),
        _ => false,
    }
}

/// Logs a full store once a minute at most, not once per request.
fn note_storage_full() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST.load(Ordering::Relaxed);
    if now >= last.saturating_add(60)
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!("storage is full: writes are refused until space is freed");
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Oci {
                code,
                detail,
                headers,
            } => {
                let body = serde_json::json!({
                    "errors": [{ "code": code.code(), "message": code.message(), "detail": detail }]
                });
                let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let mut resp = (status, body.to_string()).into_response();
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                for (name, value) in headers {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        h.insert(name, v);
                    }
                }
                resp
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                let body = serde_json::json!({
                    "errors": [{ "code": "UNKNOWN", "message": "internal server error", "detail": null }]
                });
                let mut resp =
                    (StatusCode::INTERNAL_SERVER_ERROR, body.to_string()).into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
        }
    }
}
