//! Berth's HTTP edge and binary: the only crate that knows HTTP.
//!
//! Layout:
//! - [`config`]: zot's `config.json` read unchanged, checked, resolved.
//! - [`app`]: shared state, the router, the single authorization point.
//! - [`auth`]: authentication and the per-request authorization decision.
//! - [`apikeys`]: zot's `/zot/auth/apikey` endpoints.
//! - [`oidc`], [`session`]: OpenID Connect login and browser sessions.
//! - [`ui`]: the web interface (repositories, images, compare, account).
//! - [`metrics`]: Prometheus metrics with zot's names.
//! - [`audit`]: the audit trail of mutating requests.
//! - [`v2`]: the `/v2` dispatcher and its thin handlers.
//! - [`error`]: the one mapping from errors to status, headers and the OCI
//!   JSON error body.
//! - [`ratelimit`]: zot's `http.ratelimit`, answered before authentication.
//! - [`store`]: opens the filesystem store or the one replicas share.
//! - [`serve`]: listener, TLS, HTTP/1.1 and HTTP/2, graceful shutdown.
//! - [`connection`]: deadlines for silent and slow clients, the connection cap.
//! - [`logging`]: structured logs.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod apikeys;
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod connection;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod ratelimit;
pub mod serve;
pub mod session;
pub mod store;
pub mod ui;
pub mod v2;
pub mod worker;
