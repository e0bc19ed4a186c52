//! The application state and router: `/v2` goes to the hand-written
//! dispatcher, health probes to their handlers.

use crate::auth::{Access, Auth, Refused};
use crate::config::Settings;
use crate::v2;
use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_core::Registry;
use berth_oci::endpoint::Query;
use berth_oci::Endpoint;
use http::HeaderMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared by every request.
#[derive(Clone)]
pub struct App {
    pub registry: Registry,
    pub settings: Arc<Settings>,
    /// Swapped whole on a configuration reload; a request keeps the one it
    /// started with.
    auth: Arc<ArcSwap<Auth>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `log.audit`, when configured.
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// Cleared when shutdown begins, so load balancers stop sending traffic.
    pub ready: Arc<AtomicBool>,
    /// What the web interface learned from manifests, by digest.
    pub ui_cache: Arc<crate::ui::UiCache>,
}

impl App {
    pub fn new(registry: Registry, settings: Settings, auth: Auth) -> App {
        App {
            registry,
            settings: Arc::new(settings),
            auth: Arc::new(ArcSwap::from_pointee(auth)),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            audit: None,
            ready: Arc::new(AtomicBool::new(true)),
            ui_cache: Arc::default(),
        }
    }

    /// The authentication and policy in force now. A request uses the
    /// snapshot taken when it arrived instead ([`in_force`]).
    pub fn current_auth(&self) -> Arc<Auth> {
        self.auth.load_full()
    }

    /// Puts a new authentication and policy in force.
    pub fn set_auth(&self, auth: Auth) {
        self.auth.store(Arc::new(auth));
    }

    /// The one authorization decision of a request, made before any handler
    /// runs. A configuration that only names authentication methods this
    /// build cannot check gets every registry request refused (fail closed).
    pub async fn authorize(
        &self,
        auth: &Arc<Auth>,
        endpoint: &Endpoint,
        query: &Query,
        method: &http::Method,
        headers: &HeaderMap,
    ) -> Result<Access, Refused> {
        if auth.fail_closed {
            return Err(auth
                .unauthorized("the configured authentication method is not supported by this build")
                .into());
        }
        auth.authorize(&self.registry, endpoint, query, method, headers)
            .await
    }
}

/// The authentication and policy in force for one request, taken once when
/// it arrived (by the request middleware), so that a configuration reload in
/// the middle of it cannot split it across two configurations.
#[derive(Clone)]
pub struct InForce(pub Arc<Auth>);

/// The request's snapshot (the current configuration if, outside the
/// router, it has none).
pub fn in_force(extensions: &http::Extensions, app: &App) -> Arc<Auth> {
    extensions
        .get::<InForce>()
        .map_or_else(|| app.current_auth(), |f| f.0.clone())
}

pub fn router(app: App) -> Router {
    let mut router = Router::new();
    if let Some(path) = app.settings.metrics_path.as_deref() {
        router = router.route(path, get(crate::metrics::serve));
    }
    router
        .route("/livez", get(|| async { StatusCode::OK }))
        .route("/startupz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(readyz))
        .route(
            "/zot/auth/apikey",
            axum::routing::any(crate::apikeys::handle),
        )
        .route("/", get(crate::ui::index))
        .route("/ui/app.js", get(crate::ui::script))
        .route("/ui/style.css", get(crate::ui::style))
        .route("/ui/account", get(crate::ui::account))
        .route("/ui/api/account", get(crate::ui::account_json))
        .route("/ui/api/repositories", get(crate::ui::repositories_json))
        .route("/ui/r/{*rest}", get(crate::ui::repository))
        .route("/ui/api/r/{*rest}", get(crate::ui::repository_json))
        .route("/zot/auth/login", get(crate::oidc::login))
        .route("/zot/auth/callback/{provider}", get(crate::oidc::callback))
        .route("/zot/auth/logout", axum::routing::post(crate::oidc::logout))
        .route("/v2", axum::routing::any(v2::dispatch))
        .route("/v2/", axum::routing::any(v2::dispatch))
        .route("/v2/{*rest}", axum::routing::any(v2::dispatch))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            crate::ratelimit::Limiter::shared(&app.settings),
            crate::ratelimit::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            log_request,
        ))
        .with_state(app)
}

async fn readyz(State(app): State<App>) -> StatusCode {
    if app.ready.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// One debug line per request; errors at info so they are seen by default.
async fn log_request(
    State(app): State<App>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut req = req;
    req.extensions_mut().insert(InForce(app.current_auth()));
    let req = req.map(|b| {
        axum::body::Body::new(crate::metrics::Counted::new(
            b,
            app.metrics.bytes_in.clone(),
        ))
    });
    let resp = next.run(req).await.map(|b| {
        axum::body::Body::new(crate::metrics::Counted::new(
            b,
            app.metrics.bytes_out.clone(),
        ))
    });
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    app.metrics.observe(&method, status, elapsed.as_secs_f64());
    let micros = elapsed.as_micros() as u64;
    if status >= 500 {
        tracing::error!(%method, %path, status, micros, "request failed");
    } else if status >= 400 && status != 401 && status != 404 {
        tracing::info!(%method, %path, status, micros, "request refused");
    } else {
        tracing::debug!(%method, %path, status, micros, "request");
    }
    resp
}
