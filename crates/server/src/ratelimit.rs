//! zot's `http.ratelimit`: requests beyond the configured rate are answered
//! 429 `TOOMANYREQUESTS` before anything else looks at them (in particular
//! before any password is hashed).
//!
//! zot's meaning, kept: `rate` is requests per second, allowed in bursts of
//! up to `rate` (at least 1), counted separately for each client address and
//! URL path; each `methods` entry adds a limit of its own, counted the same
//! way, for requests of that method. A request must pass every limit that
//! applies to it. Requests without a known client address are not limited.
//!
//! A bucket that has filled up again is the same as no bucket, so idle ones
//! are dropped when the table grows; a table still full after that refuses
//! new keys (a flood of distinct paths) rather than grow without bound.

use crate::audit::Peer;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_oci::ErrorCode;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `http.ratelimit`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per second for every request.
    pub rate: Option<u32>,
    /// Requests per second for requests of one method.
    pub methods: Vec<(http::Method, u32)>,
}

/// Buckets are pruned when the table reaches this size...
const PRUNE_AT: usize = 4_096;
/// ...and new keys refused while it stays at this one.
const MAX_KEYS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<(IpAddr, String), Bucket>,
    /// The size at which idle buckets are next looked for: doubles when a
    /// pruning frees little, so a sustained flood does not scan the table
    /// on every request.
    prune_at: usize,
}

/// One limit: a token bucket per (client address, path).
struct Buckets {
    rate: f64,
    burst: f64,
    table: Mutex<Table>,
}

impl Buckets {
    fn new(rate: u32) -> Buckets {
        Buckets {
            rate: f64::from(rate),
            burst: f64::from(rate.max(1)),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }

    fn allow(&self, ip: IpAddr, path: &str, now: Instant) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let refill = |b: &Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            (b.tokens + elapsed * self.rate).min(self.burst)
        };
        let table = &mut *table;
        if let Some(b) = table.buckets.get_mut(&(ip, path.to_owned())) {
            b.tokens = refill(b);
            b.at = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return true;
            }
            return false;
        }
        if table.buckets.len() >= table.prune_at {
            table.buckets.retain(|_, b| refill(b) < self.burst);
            table.prune_at = (table.buckets.len() * 2).clamp(PRUNE_AT, MAX_KEYS);
            if table.buckets.len() >= MAX_KEYS {
                return false;
            }
        }
        table.buckets.insert(
            (ip, path.to_owned()),
            Bucket {
                tokens: self.burst - 1.0,
                at: now,
            },
        );
        true
    }
}

/// Every limit in force.
pub struct Limiter {
    all: Option<Buckets>,
    methods: Vec<(http::Method, Buckets)>,
}

impl Limiter {
    pub fn new(limits: &RateLimits) -> Limiter {
        Limiter {
            all: limits.rate.map(Buckets::new),
            methods: limits
                .methods
                .iter()
                .map(|(m, r)| (m.clone(), Buckets::new(*r)))
                .collect(),
        }
    }

    /// The limiter for a server's settings, ready for the router's layer.
    pub fn shared(settings: &crate::config::Settings) -> Arc<Limiter> {
        Arc::new(Limiter::new(&settings.ratelimit))
    }

    fn is_off(&self) -> bool {
        self.all.is_none() && self.methods.is_empty()
    }

    /// Whether a request may go on. Every applicable limit takes a token
    /// only if the ones before it allowed the request (as zot's chain does).
    fn allow(&self, ip: IpAddr, method: &http::Method, path: &str, now: Instant) -> bool {
        if let Some(all) = &self.all {
            if !all.allow(ip, path, now) {
                return false;
            }
        }
        self.methods
            .iter()
            .filter(|(m, _)| m == method)
            .all(|(_, b)| b.allow(ip, path, now))
    }
}

/// The middleware: 429 with the OCI error body when a limit is reached.
pub async fn limit(
    State(limiter): State<Arc<Limiter>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if limiter.is_off() {
        return next.run(req).await;
    }
    let Some(ip) = req.extensions().get::<Peer>().map(|p| p.0.ip()) else {
        return next.run(req).await;
    };
    if limiter.allow(ip, req.method(), req.uri().path(), Instant::now()) {
        return next.run(req).await;
    }
    ApiError::with_detail(
        ErrorCode::TooManyRequests,
        "rate limit reached (http.ratelimit)",
    )
    .header(http::header::RETRY_AFTER, "1")
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn buckets_follow_zots_keys_and_burst() {
        let l = Limiter::new(&RateLimits {
            rate: Some(2),
            methods: vec![(http::Method::DELETE, 1)],
        });
        let t = Instant::now();
        let get = http::Method::GET;
        // A burst of `rate`, then refused, per address and path.
        assert!(l.allow(A, &get, "/v2/", t));
        assert!(l.allow(A, &get, "/v2/", t));
        assert!(!l.allow(A, &get, "/v2/", t));
        assert!(l.allow(B, &get, "/v2/", t));
        assert!(l.allow(A, &get, "/v2/_catalog", t));
        // Half a second gives one token back at 2/s.
        assert!(l.allow(A, &get, "/v2/", t + Duration::from_millis(500)));
        assert!(!l.allow(A, &get, "/v2/", t + Duration::from_millis(500)));
        // The DELETE limit applies on top, to DELETE only.
        let del = http::Method::DELETE;
        assert!(l.allow(A, &del, "/v2/x/manifests/a", t));
        assert!(!l.allow(A, &del, "/v2/x/manifests/a", t));
        assert!(l.allow(A, &del, "/v2/x/manifests/a", t + Duration::from_secs(1)));
    }

    #[test]
    fn idle_buckets_are_dropped_and_the_table_is_bounded() {
        let b = Buckets::new(1);
        let t = Instant::now();
        for i in 0..PRUNE_AT {
            assert!(b.allow(A, &format!("/p{i}"), t));
        }
        // All of them full again a second later: pruned on the next insert.
        assert!(b.allow(A, "/new", t + Duration::from_secs(1)));
        assert_eq!(b.table.lock().unwrap().buckets.len(), 1);
        assert_eq!(b.table.lock().unwrap().prune_at, PRUNE_AT);
    }
}
