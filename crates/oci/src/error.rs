//! The distribution-spec error codes, each registered once with its status.

/// An error code of the distribution-spec (and Docker's extensions that
/// clients understand). The HTTP status for a code lives here and only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// A chunk or range that does not fit what is stored (status 416).
    RangeInvalid,
    /// The manifest is larger than the configured limit (status 413).
    ManifestTooLarge,
    /// The method is not defined on this endpoint (status 405).
    MethodNotAllowed,
    /// A pull-through upstream failed or sent bad data (status 502).
    UpstreamFailed,
    /// A tag that breaks the grammar, in a write (status 400).
    TagInvalid,
    /// The store has no room left (status 507); retrying later may work.
    StorageFull,
    /// More `tag` parameters than a push may carry (status 414).
    TooManyTags,
}

impl ErrorCode {
    /// The code string that goes into the JSON error body.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::RangeInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::ManifestTooLarge => "SIZE_INVALID",
            ErrorCode::MethodNotAllowed => "UNSUPPORTED",
            ErrorCode::UpstreamFailed => "UNKNOWN",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::StorageFull => "UNKNOWN",
            ErrorCode::TooManyTags => "UNSUPPORTED",
        }
    }

    /// The HTTP status code that goes with it.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => 404,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::TagInvalid
            | ErrorCode::Unsupported => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::ManifestTooLarge => 413,
            ErrorCode::TooManyTags => 414,
            ErrorCode::RangeInvalid => 416,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::UpstreamFailed => 502,
            ErrorCode::StorageFull => 507,
        }
    }

    /// The spec's short human message for the code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "blob unknown to registry",
            ErrorCode::BlobUploadInvalid => "blob upload invalid",
            ErrorCode::BlobUploadUnknown => "blob upload unknown to registry",
            ErrorCode::DigestInvalid => "provided digest did not match uploaded content",
            ErrorCode::ManifestBlobUnknown => {
                "manifest references a manifest or blob unknown to registry"
            }
            ErrorCode::ManifestInvalid => "manifest invalid",
            ErrorCode::ManifestUnknown => "manifest unknown to registry",
            ErrorCode::NameInvalid => "invalid repository name",
            ErrorCode::NameUnknown => "repository name not known to registry",
            ErrorCode::SizeInvalid => "provided length did not match content length",
            ErrorCode::Unauthorized => "authentication required",
            ErrorCode::Denied => "requested access to the resource is denied",
            ErrorCode::Unsupported => "the operation is unsupported",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::RangeInvalid => "requested range does not fit the upload",
            ErrorCode::ManifestTooLarge => "manifest exceeds the size limit",
            ErrorCode::MethodNotAllowed => "method not allowed on this endpoint",
            ErrorCode::UpstreamFailed => "the upstream registry failed",
            ErrorCode::TagInvalid => "manifest tag is not a valid tag",
            ErrorCode::StorageFull => "the registry's storage is full",
            ErrorCode::TooManyTags => "too many tag parameters",
        }
    }
}
