//! Who may do what. Depends only on `berth-oci`; no I/O beyond reading an
//! htpasswd file, no HTTP.
//!
//! Layout:
//! - [`glob`]: repository patterns with zot's doublestar meaning.
//! - [`policy`]: zot's `accessControl` as a pure function of identity,
//!   action and repository, plus API-key scopes.
//! - [`htpasswd`]: bcrypt and SHA-crypt password files, reloaded on change,
//!   with a short cache of successful checks.
//! - [`apikey`]: minting, hashing and checking API keys.
//! - [`basic`]: parsing the `Authorization` header.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod apikey;
pub mod basic;
/// Globs live in `berth-oci` (core uses them too, for sync rules).
pub use berth_oci::glob;
pub mod htpasswd;
pub mod policy;

pub use policy::{Action, Decision, Identity, Method, Policy};
