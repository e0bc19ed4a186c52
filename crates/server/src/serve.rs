//! The listener: plain TCP or rustls, HTTP/1.1 and HTTP/2, graceful shutdown.
//!
//! On SIGTERM or SIGINT the server stops accepting, marks itself not ready,
//! lets in-flight requests finish (up to a bound), then returns.

use crate::app::{self, App};
use crate::auth::Auth;
use crate::config::{Settings, TlsFiles};
use crate::connection::{self, ConnState, Limits, Table, Tracked};
use crate::worker::RESTART_PAUSE;
use berth_core::{Options, Registry};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long in-flight requests may run after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an HTTP/2 client is pinged, and how long it has to answer.
const H2_PING: Duration = Duration::from_secs(20);
/// How long a connection asked to close may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// First and longest wait after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Share of the time a background GC pass may work: the rest is left to
/// pushes and pulls.
const GC_PACE: f64 = 0.2;
/// How often noted pull times are written to storage.
const PULL_FLUSH_PERIOD: Duration = Duration::from_secs(30);
/// How often abandoned uploads are looked for.
const EXPIRY_PERIOD: Duration = Duration::from_secs(600);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, BoxError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("http.tls.cert {}: {e}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("http.tls.cert {}: {e}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("http.tls.key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("http.tls.cacert {}: {e}", ca.display()))?
            {
                roots.add(cert.map_err(|e| format!("http.tls.cacert {}: {e}", ca.display()))?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves one connection until it ends, its watchdog closes it (idle past
/// its deadline, or evicted to make room), or the server stops.
async fn drive<I, S>(
    builder: &Builder<TokioExecutor>,
    io: I,
    service: S,
    state: &Arc<ConnState>,
    limits: Limits,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<connection::Guarded<axum::body::Body>>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(connection::PacedIo::new(io, limits.write, state.clone()));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let graceful = tokio::select! {
        r = conn.as_mut() => return r,
        _ = connection::watchdog(state, &limits) => true,
        _ = stopping.wait_for(|s| *s) => false,
    };
    conn.as_mut().graceful_shutdown();
    if graceful {
        // Idle: nothing is lost by cutting a slow goodbye short.
        return tokio::time::timeout(CLOSE_GRACE, conn)
            .await
            .unwrap_or(Ok(()));
    }
    conn.await
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Builds the registry for the settings and serves until a signal arrives.
pub async fn run(settings: Settings) -> Result<(), BoxError> {
    for feature in &settings.inactive {
        tracing::warn!(feature = %feature, "configured but not active in this build");
    }
    if settings.auth_unsupported {
        tracing::error!("only authentication methods this build cannot check are configured: every registry request will be refused");
    }
    let store = crate::store::open(&settings).await?;
    // On the shared store other replicas create repositories too: the
    // catalog is read from the store at each request.
    let options = Options {
        shared_store: settings.shared.is_some(),
        ..Options::default()
    };
    let registry = Registry::new(store, options);
    let sync = crate::config::build_sync(&settings)?;
    let tls = settings.tls.as_ref().map(tls_acceptor).transpose()?;
    let listener = TcpListener::bind((settings.address.as_str(), settings.port))
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}:{}: {e}",
                settings.address, settings.port
            )
        })?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = settings
        .external_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let auth = Auth::from_settings(&settings, &registry, &base_url).await?;
    let registry_for_reload = registry.clone();
    let audit = match &settings.audit_path {
        Some(path) => Some(Arc::new(
            crate::audit::Audit::open(path)
                .map_err(|e| format!("log.audit {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let mut app = App::new(registry.clone(), settings, auth);
    app.audit = audit;
    let router = app::router(app.clone());

    if let Err(e) = registry_for_reload.recover_gc_trash().await {
        tracing::warn!(error = %e, "could not look for an interrupted garbage collection");
    }
    let (maintenance, plan) = tokio::sync::watch::channel(Maintenance::of(&app.settings, sync));
    registry_for_reload.set_sync(plan.borrow().sync.clone());
    let metrics = app.metrics.clone();
    let worker = |name: &'static str| (name, metrics.worker_restarts(name));
    let mut workers = Vec::new();
    {
        let (name, restarts) = worker("upload-expiry");
        workers.push(crate::worker::spawn(
            name,
            restarts,
            RESTART_PAUSE,
            move || expire_uploads(registry.clone()),
        ));
    }
    {
        let (name, restarts) = worker("mirroring");
        let (registry, plan) = (registry_for_reload.clone(), maintenance.subscribe());
        let metrics = metrics.clone();
        workers.push(crate::worker::spawn(
            name,
            restarts,
            RESTART_PAUSE,
            move || supervise_sync(registry.clone(), plan.clone(), metrics.clone()),
        ));
    }
    {
        let (name, restarts) = worker("gc");
        let (registry, audit) = (registry_for_reload.clone(), app.audit.clone());
        let metrics = metrics.clone();
        workers.push(crate::worker::spawn(
            name,
            restarts,
            RESTART_PAUSE,
            move || {
                collect_garbage(
                    registry.clone(),
                    metrics.clone(),
                    audit.clone(),
                    plan.clone(),
                )
            },
        ));
    }
    {
        let (name, restarts) = worker("pull-times");
        let registry = registry_for_reload.clone();
        workers.push(crate::worker::spawn(
            name,
            restarts,
            RESTART_PAUSE,
            move || write_pull_times(registry.clone()),
        ));
    }
    if let Some(path) = app.settings.config_path.clone() {
        let (name, restarts) = worker("config-watch");
        let (app, registry, base_url) =
            (app.clone(), registry_for_reload.clone(), base_url.clone());
        let maintenance = Arc::new(maintenance);
        workers.push(crate::worker::spawn(
            name,
            restarts,
            RESTART_PAUSE,
            move || {
                watch_config(
                    app.clone(),
                    registry.clone(),
                    path.clone(),
                    base_url.clone(),
                    maintenance.clone(),
                )
            },
        ));
    }
    if let Some(every) = app.settings.scrub_interval {
        let (name, restarts) = worker("scrub");
        let registry = registry_for_reload.clone();
        workers.push(crate::worker::spawn(
            name,
            restarts,
            RESTART_PAUSE,
            move || scrub(registry.clone(), every),
        ));
    }

    tracing::info!(%addr, scheme, version = env!("CARGO_PKG_VERSION"), "berth listening");
    // A plain line for scripts and tests that start Berth on port 0.
    println!("berth listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();

    let limits = Limits::new(&app.settings, connection::fd_limit());
    tracing::info!(
        max_connections = limits.max_connections,
        header_timeout = ?limits.header,
        read_timeout = ?limits.body,
        write_timeout = ?limits.write,
        "connection limits"
    );
    let table = Table::new(limits.max_connections);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's watchdog times request heads: hyper's timer
        // would also cut keep-alive connections idle past it.
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING))
        .keep_alive_timeout(H2_PING);
    let builder = Arc::new(builder);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut backoff: Option<Duration> = None;
    loop {
        tokio::select! {
            _ = table.wait_for_room() => {}
            _ = &mut signal => break,
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if connection::is_resource_exhaustion(&e) => {
                    // Out of descriptors: never spin. Log once, make room,
                    // and wait longer each time until an accept succeeds.
                    let wait = match backoff {
                        None => {
                            tracing::warn!(error = %e, open = table.len(), "cannot accept connections: backing off and closing idle ones");
                            ACCEPT_BACKOFF
                        }
                        Some(w) => (w * 2).min(ACCEPT_BACKOFF_MAX),
                    };
                    backoff = Some(wait);
                    table.evict_one();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = &mut signal => break,
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        if backoff.take().is_some() {
            tracing::info!(open = table.len(), "accepting connections again");
        }
        let _ = stream.set_nodelay(true);
        let slot = table.admit();
        let service = TowerToHyperService::new(Tracked::new(
            router.clone(),
            slot.state.clone(),
            &limits,
            peer,
        ));
        let builder = builder.clone();
        let tls = tls.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let state = &slot.state;
            let result = match tls {
                None => drive(&builder, stream, service, state, limits, stopping).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        r = acceptor.accept(stream) => r,
                        _ = connection::watchdog(state, &limits) => return,
                    };
                    match handshake {
                        Ok(tls_stream) => {
                            drive(&builder, tls_stream, service, state, limits, stopping).await
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    // HTTP first: stop taking requests, let those in flight finish; then
    // the workers (a collection pass cut short is undone at the next start).
    tracing::info!("shutting down: draining in-flight requests");
    app.ready.store(false, Ordering::Relaxed);
    drop(listener);
    stop.send_replace(true);
    tokio::select! {
        _ = table.drained() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out; closing remaining connections"),
    }
    drop(workers);
    if let Err(e) = registry_for_reload.end_collection().await {
        tracing::warn!(error = %e, "could not undo a collection pass cut short");
    }
    if let Err(e) = registry_for_reload.flush_pulls().await {
        tracing::warn!(error = %e, "could not write pull times");
    }
    Ok(())
}

/// Removes abandoned upload sessions, now and then.
async fn expire_uploads(registry: Registry) {
    let mut tick = tokio::time::interval(EXPIRY_PERIOD);
    loop {
        tick.tick().await;
        match registry.expire_uploads().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
        }
    }
}

/// Writes the pull times noted in memory, now and then.
async fn write_pull_times(registry: Registry) {
    let mut tick = tokio::time::interval(PULL_FLUSH_PERIOD);
    loop {
        tick.tick().await;
        if let Err(e) = registry.flush_pulls().await {
            tracing::warn!(error = %e, "could not write pull times");
        }
    }
}

/// Re-hashes all content every `every`.
async fn scrub(registry: Registry, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        match registry.scrub(|_| {}).await {
            Ok(r) if r.corrupt.is_empty() => tracing::info!(
                checked = r.checked,
                bytes = r.bytes,
                "scrub: all content verified"
            ),
            Ok(r) => {
                tracing::error!(checked = r.checked, corrupt = ?r.corrupt, "scrub: corrupt content quarantined")
            }
            Err(e) => tracing::warn!(error = %e, "scrub failed"),
        }
    }
}

/// How often the configuration file is looked at.
const CONFIG_POLL: Duration = Duration::from_secs(2);

fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// What the garbage collector and the mirroring loops run with; a reload
/// sends a new one.
#[derive(Clone)]
struct Maintenance {
    gc: Option<crate::config::GcSettings>,
    retention: Arc<berth_core::retention::Retention>,
    sync: Option<Arc<berth_core::sync::Sync>>,
}

impl Maintenance {
    fn of(s: &Settings, sync: Option<Arc<berth_core::sync::Sync>>) -> Maintenance {
        Maintenance {
            gc: s.gc,
            retention: s.retention.clone(),
            sync,
        }
    }
}

/// Installs the sync extension in force and runs one mirroring loop per
/// registry with a `pollInterval`; a reload replaces both.
async fn supervise_sync(
    registry: Registry,
    mut plan: tokio::sync::watch::Receiver<Maintenance>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut loops: Vec<crate::worker::Worker> = Vec::new();
    loop {
        let sync = plan.borrow_and_update().sync.clone();
        // Dropping a worker stops it.
        loops.clear();
        registry.set_sync(sync.clone());
        let polled = sync.iter().flat_map(|s| {
            s.registries
                .iter()
                .enumerate()
                .filter_map(move |(i, r)| Some((s.clone(), i, r.poll_interval?)))
        });
        for (sync, i, every) in polled {
            let registry = registry.clone();
            let restarts = metrics.worker_restarts("mirroring");
            loops.push(crate::worker::spawn(
                "mirroring",
                restarts,
                RESTART_PAUSE,
                move || {
                    let (registry, sync) = (registry.clone(), sync.clone());
                    async move {
                        let reg = &sync.registries[i];
                        loop {
                            match registry.mirror(reg).await {
                                Ok(n) => tracing::info!(
                                    upstream = ?reg.upstream.urls(),
                                    copied = n,
                                    "mirroring pass done"
                                ),
                                Err(e) => tracing::warn!(error = %e, "mirroring pass failed"),
                            }
                            tokio::time::sleep(every).await;
                        }
                    }
                },
            ));
        }
        if plan.changed().await.is_err() {
            return;
        }
    }
}

/// Runs a GC pass (retention first) every `gcInterval`, with the settings
/// in force at that moment; a reload restarts the wait.
async fn collect_garbage(
    registry: Registry,
    metrics: Arc<crate::metrics::Metrics>,
    audit: Option<Arc<crate::audit::Audit>>,
    mut plan: tokio::sync::watch::Receiver<Maintenance>,
) {
    loop {
        let m = plan.borrow_and_update().clone();
        let Some(g) = m.gc.filter(|g| !g.interval.is_zero()) else {
            if plan.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            _ = tokio::time::sleep(g.interval) => {}
            changed = plan.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let started = std::time::Instant::now();
        let opts = berth_core::gc::GcOptions {
            retention: Some(m.retention.clone()),
            delay: g.delay,
            dry_run: false,
            pace: GC_PACE,
        };
        match registry
            .gc(opts, |line| {
                tracing::debug!(progress = line, "garbage collection")
            })
            .await
        {
            Ok(r) => {
                metrics.observe_gc(&r, started.elapsed().as_secs_f64());
                if let (Some(audit), false) = (&audit, m.retention.dry_run) {
                    audit_retention(audit, &r.retention);
                }
                let (tags, manifests) = (
                    r.retention.tags_removed.len(),
                    r.retention.manifests_removed.len(),
                );
                if !r.blobs_removed.is_empty()
                    || !r.links_removed.is_empty()
                    || tags + manifests > 0
                {
                    tracing::info!(
                        blobs = r.blobs_removed.len(),
                        links = r.links_removed.len(),
                        bytes = r.bytes_reclaimed,
                        tags,
                        manifests,
                        retention_dry_run = m.retention.dry_run,
                        restored = r.restored,
                        "garbage collected"
                    );
                }
            }
            Err(berth_core::CoreError::Busy) => tracing::info!(
                "garbage collection skipped: another pass (a berth gc?) holds the store"
            ),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}

/// One audit line per tag and manifest retention removed (by Berth itself:
/// no user, `auth: "system"`).
fn audit_retention(audit: &crate::audit::Audit, r: &berth_core::retention::RetentionReport) {
    let event = |action: &str, repo: &str| {
        let mut e = crate::audit::Event::new(action, 200);
        e.auth = "system".into();
        e.repository = Some(repo.to_owned());
        e
    };
    for (repo, tag) in &r.tags_removed {
        let mut e = event("retention: delete tag", repo);
        e.reference = Some(tag.clone());
        audit.record(e);
    }
    for (repo, digest) in &r.manifests_removed {
        let mut e = event("retention: delete untagged manifest", repo);
        e.digest = Some(digest.to_string());
        audit.record(e);
    }
}

/// Re-reads the configuration when its file changes or on SIGHUP.
async fn watch_config(
    app: App,
    registry: Registry,
    path: std::path::PathBuf,
    base_url: String,
    maintenance: Arc<tokio::sync::watch::Sender<Maintenance>>,
) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last = file_stamp(&path);
    let mut tick = tokio::time::interval(CONFIG_POLL);
    loop {
        let signalled = tokio::select! {
            _ = tick.tick() => false,
            _ = async {
                match hangup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
        };
        let now = file_stamp(&path);
        if !signalled && now == last {
            continue;
        }
        last = now;
        if let Some((new, sync)) = reload(&app, &registry, &path, &base_url).await {
            maintenance.send_replace(Maintenance::of(&new, sync));
        }
    }
}

/// Applies a new configuration's access control, authentication and their
/// files, or keeps the running one if the new file does not validate.
/// Requests in flight finish with the configuration they started with.
/// Returns the new settings (and sync extension) when they were taken.
async fn reload(
    app: &App,
    registry: &Registry,
    path: &std::path::Path,
    base_url: &str,
) -> Option<(Settings, Option<Arc<berth_core::sync::Sync>>)> {
    let new = crate::config::settings_from(path).and_then(|s| {
        let sync = crate::config::build_sync(&s)?;
        Ok((s, sync))
    });
    let (new, sync) = match new {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            return None;
        }
    };
    let old = &app.settings;
    if new.address != old.address
        || new.port != old.port
        || new.root_directory != old.root_directory
        || new.tls.is_some() != old.tls.is_some()
        || new.metrics_path != old.metrics_path
        || new.ratelimit != old.ratelimit
    {
        tracing::warn!(
            "listen address, storage, TLS, metrics path and rate limit changes take effect at the next restart"
        );
    }
    match Auth::from_settings(&new, registry, base_url).await {
        Ok(auth) => {
            // Nothing carried over: the cookie key comes from the keys file
            // or the store's secret, so a changed key or secureSession takes
            // effect here, and sessions sealed with the same key live on.
            app.set_auth(auth);
            tracing::info!(path = %path.display(), "configuration reloaded");
            Some((new, sync))
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            None
        }
    }
}
