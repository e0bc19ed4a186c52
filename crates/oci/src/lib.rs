//! The OCI vocabulary Berth speaks, with no I/O and no HTTP types.
//!
//! Layout:
//! - [`digest`]: content digests (`sha256`, `sha512`) and a streaming hasher.
//! - [`name`]: repository names, tags and references, validated by the
//!   distribution-spec grammar so that nothing unchecked reaches storage.
//! - [`manifest`]: parsing and validation of image manifests, indexes, Docker
//!   schema2 manifests and manifest lists, and artifacts.
//! - [`range`]: the `Range` and `Content-Range` header grammars used by blob
//!   reads and chunked uploads.
//! - [`endpoint`]: the `/v2` path parser, reading from the right so that
//!   repository names may hold any number of `/`.
//! - [`error`]: the distribution-spec error codes and their HTTP status.
//! - [`glob`]: repository patterns with zot's (doublestar) meaning, for the
//!   access policy and for sync's content rules.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod digest;
pub mod endpoint;
pub mod error;
pub mod glob;
pub mod manifest;
pub mod name;
pub mod range;

pub use digest::{Algorithm, Digest, Hasher};
pub use endpoint::{Endpoint, Route};
pub use error::ErrorCode;
pub use name::{Reference, RepoName, Tag};
