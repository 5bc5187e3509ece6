//! Building and running the server: the Postgres (external or embedded), the store, migrations
//! and the actix-web HTTP server, with a graceful shutdown that undoes them in reverse order.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::pg::{EmbeddedOptions, EmbeddedPostgres, PgError};
use crate::state::AppState;
use crate::store::{Store, StoreError, StoreOptions};

/// Why bigpeer could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("{source}")]
    Store {
        source: StoreError,
        hint: Option<String>,
    },
    #[error("cannot connect to Postgres at {target}: {detail}")]
    Connect {
        target: String,
        detail: String,
        source: StoreError,
        hint: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Server(std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A key-management command failed.
    #[error("{0}")]
    Auth(crate::auth::AuthError),
    /// The authentication webhook's client cannot be set up.
    #[error("{0}")]
    Webhook(String),
    /// A `bigpeer webhooks` command failed.
    #[error("{0}")]
    Webhooks(#[from] crate::webhooks::WebhookError),
}

impl AppError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Config(e) => e.code(),
            AppError::Postgres(e) => e.code(),
            AppError::Store { source, .. } | AppError::Connect { source, .. } => source.code(),
            AppError::Bind { .. } => "http/bind",
            AppError::Server(_) => "http/server",
            AppError::Tls(_) => "tls/invalid",
            AppError::Auth(e) => e.code(),
            AppError::Webhook(_) => "auth/webhook-failed",
            AppError::Webhooks(e) => e.code(),
        }
    }

    /// How to fix it.
    pub fn hint(&self) -> Option<String> {
        match self {
            AppError::Config(e) => e.hint(),
            AppError::Postgres(e) => e.hint(),
            AppError::Store { hint, .. } => hint.clone(),
            AppError::Connect { hint, .. } => Some(hint.clone()),
            AppError::Bind { addr, source } => Some(match source.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "another process listens on port {}: stop it, or choose another --listen",
                    addr.port()
                ),
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges: choose a port such as 8080".to_string()
                }
                _ => "choose an address of this machine, such as 127.0.0.1:8080 or 0.0.0.0:8080"
                    .to_string(),
            }),
            AppError::Server(_) => None,
            AppError::Tls(_) => Some(
                "give a PEM certificate chain (--tls-cert) and its PEM private key (--tls-key)"
                    .to_string(),
            ),
            AppError::Auth(_) | AppError::Webhook(_) | AppError::Webhooks(_) => None,
        }
    }

    /// Whether the user's configuration is at fault (the binary exits with 2 rather than 1).
    pub fn is_config(&self) -> bool {
        matches!(self, AppError::Config(_))
    }
}

/// The number of HTTP worker threads: one per core, as actix-web's default.
pub fn http_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `pool_size` connections split into the shared pool's (writes, sync, the change feed) and
/// each HTTP worker's own read pool's: half the connections go to the workers when that gives
/// each at least one, else all are shared.
pub fn split_pool(pool_size: u32, workers: usize) -> (u32, u32) {
    let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
    let per_worker = pool_size / 2 / workers;
    if per_worker == 0 {
        return (pool_size, 0);
    }
    (pool_size - per_worker * workers, per_worker)
}

/// A Postgres connection and, in embedded mode, the server behind it.
#[derive(Debug)]
pub struct Database {
    pub store: Store,
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `config.database_url`, or starts the embedded Postgres and connects to it.
    /// The embedded server is stopped again when connecting fails.
    pub async fn open(config: &Config) -> Result<Database, AppError> {
        let options = StoreOptions {
            max_connections: split_pool(config.pool_size, http_workers()).0,
            connect_timeout: config.connect_timeout,
            ..StoreOptions::default()
        };
        match &config.database_url {
            Some(url) => {
                tracing::info!(database = %url.masked(), "connecting to Postgres");
                let store = connect(url.expose(), &options).await?;
                Ok(Database {
                    store,
                    embedded: None,
                })
            }
            None => {
                let started = Instant::now();
                let pg = EmbeddedPostgres::start(EmbeddedOptions {
                    data_dir: config.data_dir.clone(),
                    bin_dir: config.postgres_bin_dir.clone(),
                    timeout: Duration::from_secs(60),
                })
                .await?;
                tracing::info!(
                    version = pg.version(),
                    cluster = %pg.cluster_dir().display(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "the embedded Postgres is running"
                );
                match connect(pg.database_url(), &options).await {
                    Ok(store) => Ok(Database {
                        store,
                        embedded: Some(pg),
                    }),
                    Err(err) => {
                        stop_embedded(pg).await;
                        Err(err)
                    }
                }
            }
        }
    }

    /// [`Database::open`] for the command-line tools (`bigpeer keys`, `bigpeer migrate`): with
    /// the embedded default, when a bigpeer server already runs on the data folder, they connect
    /// to its cluster over the private socket instead of failing with `pg/data-dir-in-use`.
    pub async fn open_beside_server(config: &Config) -> Result<Database, AppError> {
        if config.database_url.is_none() {
            if let Some(url) = crate::pg::running_cluster_url(&config.data_dir)? {
                tracing::info!(
                    data_dir = %config.data_dir.display(),
                    "using the embedded Postgres of the bigpeer server running on this data folder"
                );
                let options = StoreOptions {
                    max_connections: 2,
                    connect_timeout: config.connect_timeout,
                    ..StoreOptions::default()
                };
                let store = connect(&url, &options).await?;
                return Ok(Database {
                    store,
                    embedded: None,
                });
            }
        }
        Database::open(config).await
    }

    /// Applies pending migrations; returns how many were applied.
    pub async fn migrate(&self) -> Result<usize, AppError> {
        self.store
            .migrate()
            .await
            .map_err(|source| AppError::Store {
                hint: Some(
                    "check that the database user may create tables; the migrations are in sql/"
                        .to_string(),
                ),
                source,
            })
    }

    /// Closes the pool, then stops the embedded Postgres.
    pub async fn close(self) {
        self.store.close().await;
        if let Some(pg) = self.embedded {
            stop_embedded(pg).await;
        }
    }
}

async fn stop_embedded(pg: EmbeddedPostgres) {
    if let Err(err) = pg.stop().await {
        tracing::error!(code = err.code(), "{err}");
    }
}

async fn connect(url: &str, options: &StoreOptions) -> Result<Store, AppError> {
    match Store::connect(url, options).await {
        Ok(store) => Ok(store),
        Err(source) => Err(diagnose(url, source, options.connect_timeout).await),
    }
}

/// Says what went wrong connecting, as precisely as the error allows (see
/// [`crate::store::diagnose_connect`]).
async fn diagnose(url: &str, source: StoreError, waited: Duration) -> AppError {
    match crate::store::diagnose_connect(url, &source, waited).await {
        Some(d) => AppError::Connect {
            target: d.target,
            detail: d.detail,
            source,
            hint: d.hint,
        },
        None => AppError::Store {
            hint: Some("check DATABASE_URL, or unset it to run the embedded Postgres".to_string()),
            source,
        },
    }
}

/// Registers every route and middleware on an actix `App`.
pub fn configure_app(cfg: &mut web::ServiceConfig) {
    crate::http::configure(cfg);
}

/// How often a server re-reads the system parameters another process may have changed with
/// `ALTER SYSTEM` (the process that runs the statement uses it at once).
pub const SETTINGS_REFRESH: Duration = Duration::from_secs(2);

/// A server running in this process: returned by [`spawn_app`].
#[derive(Debug)]
pub struct RunningApp {
    addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    handle: ServerHandle,
    server: JoinHandle<std::io::Result<()>>,
    database: Database,
    sync: crate::sync::SyncHub,
    /// The webhook delivery loops.
    deliverer: Option<crate::webhooks::Deliverer>,
    /// The NATS JetStream sink, when `nats_url` is set.
    nats: Option<crate::nats::NatsSink>,
    /// Ended at shutdown, so that they do not hold the graceful stop.
    change_streams: web::Data<crate::http::changes::ChangeStreams>,
}

/// Starts everything `config` asks for: the embedded Postgres (without a database URL), the
/// store, migrations (unless turned off) and the HTTP server on `config.listen` (port 0 picks a
/// free port; see [`RunningApp::local_addr`]). Logging is not set up here (see
/// [`crate::logging::init`]).
pub async fn spawn_app(config: Config) -> Result<RunningApp, AppError> {
    // Bind first: a taken port fails before Postgres is started for nothing.
    let listener = std::net::TcpListener::bind(config.listen).map_err(|source| AppError::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| AppError::Bind {
        addr: config.listen,
        source,
    })?;

    // A bad certificate fails before Postgres is started, too.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };

    // So does a webhook client that cannot be built.
    let webhook = match &config.auth_webhook_url {
        Some(url) => Some(
            crate::sync::webhook::AuthWebhook::new(crate::sync::webhook::WebhookConfig {
                url: url.clone(),
                provider: config.auth_webhook_provider.clone(),
                app_id: config.app_id.clone(),
                secret: config
                    .auth_webhook_secret
                    .as_ref()
                    .map(|s| s.expose().to_owned()),
                timeout: Duration::from_secs(30),
            })
            .map_err(|e| AppError::Webhook(e.to_string()))?,
        ),
        None => None,
    };
    let database = Database::open(&config).await?;
    if config.migrate_on_start {
        if let Err(err) = database.migrate().await {
            database.close().await;
            return Err(err);
        }
    }

    let executor = crate::service::Executor::new(
        database.store.clone(),
        &crate::store::GroupCommitOptions::default(),
    );
    // ALTER SYSTEM settings kept in the database: from the start, and what other processes
    // change later.
    match executor.load_settings().await {
        Ok(dropped) => {
            for name in dropped {
                tracing::warn!(parameter = %name, "ignoring a kept system parameter that is not valid any more");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "system parameters not read (is the database migrated?); using the defaults")
        }
    }
    executor.refresh_settings_every(SETTINGS_REFRESH);
    // One key store (and cache) for HTTP and sync: a revocation reaches both at once.
    let keys = crate::auth::KeyStore::new(database.store.clone());
    // One set of rate limits for HTTP and sync: a key's pushes count against its requests.
    let limits =
        crate::auth::rate::RateLimits::new(config.rate_limit_per_key, config.rate_limit_per_ip);
    let sync = crate::sync::SyncHub::new(
        database.store.clone(),
        crate::sync::SyncOptions {
            playground: config.playground,
            max_clock_skew: config.max_clock_skew,
            webhook,
            ..crate::sync::SyncOptions::default()
        },
    )
    .with_keys(keys.clone())
    .with_strict_mode(executor.strict_mode_flag())
    .with_limits(limits.clone());
    let sync_sessions = sync.clone();
    // The NATS JetStream sink. Its position is created (at the end of the change log, the
    // first time) before the HTTP server takes writes, so that this server's writes are all
    // published; when that fails (the database is not migrated yet), the sink retries.
    let nats = match &config.nats_url {
        Some(url) => {
            if let Err(e) = database.store.ensure_cdc_sink(crate::nats::SINK_NAME).await {
                tracing::warn!(code = e.code(), error = %e, "the NATS sink's position is not recorded yet; retrying");
            }
            Some(crate::nats::NatsSink::start(
                database.store.clone(),
                crate::nats::NatsOptions::new(url.expose(), config.nats_subject_prefix.clone()),
            ))
        }
        None => None,
    };
    let webhook_stats = crate::webhooks::DeliveryStats::default();
    let mut metrics =
        crate::http::metrics::Metrics::new(Some((database.store.clone(), sync.clone())));
    metrics.register_webhooks(&webhook_stats);
    if let Some(n) = &nats {
        metrics = metrics.with_nats(n.stats());
    }
    let metrics = web::Data::new(metrics);
    let state = web::Data::new(AppState {
        store: database.store.clone(),
        executor,
        sync,
        keys,
        playground: config.playground,
        admin_key: config.admin_key.clone(),
        limits,
        webhooks: crate::webhooks::Registry::new(
            database.store.clone(),
            config.webhook_allow_private,
        ),
    });
    let connections = crate::http::edge::Connections::new(crate::http::edge::EdgeOptions {
        header_timeout: config.header_timeout,
        body_timeout: config.body_timeout,
        keep_alive: config.keep_alive_timeout,
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
    });
    {
        // Close connections that send no complete request in time.
        let connections = std::sync::Arc::downgrade(&connections);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(connections) = connections.upgrade() else {
                    return;
                };
                connections.sweep();
            }
        });
    }
    {
        // Forget idle rate-limit keys now and then, so that memory stays bounded.
        let limits = state.limits.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limits.shrink();
            }
        });
    }
    {
        // Prune the change log past its retention. Every process does it; one at a time runs
        // (the store's advisory lock), the others skip.
        let store = database.store.clone();
        let retention = config.changes_retention;
        let every = (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(600));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if store.is_closed() {
                    return;
                }
                match store.prune_changes(retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "pruned the change log"),
                    Err(e) => tracing::warn!(error = %e, "pruning the change log failed"),
                }
            }
        });
    }
    let deliverer = match crate::webhooks::Deliverer::start(
        database.store.clone(),
        crate::webhooks::DeliveryOptions {
            timeout: config.webhook_timeout,
            max_age: config.webhook_max_age,
            disable_after: config.webhook_disable_after,
            allow_private: config.webhook_allow_private,
            ..crate::webhooks::DeliveryOptions::default()
        },
        webhook_stats,
    ) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!("cannot start webhook delivery (no HTTP client): {e}");
            None
        }
    };
    if config.playground {
        tracing::warn!(
            "PLAYGROUND MODE: every request may read and write everything without a key; never use this in production"
        );
    }
    let sync_data = web::Data::new(state.sync.clone());
    let workers = http_workers();
    let per_worker_reads = split_pool(config.pool_size, workers).1;
    let edge = web::Data::from(connections.clone());
    let change_streams = web::Data::new(crate::http::changes::ChangeStreams::default());
    let change_streams_handle = change_streams.clone();
    let server = HttpServer::new(move || {
        // Called on each worker thread, within its single-threaded runtime: the worker reads
        // through connections its own runtime drives (see `Store::add_thread_reads`).
        let worker_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if per_worker_reads > 0 && worker_runtime {
            state.store.add_thread_reads(per_worker_reads);
        }
        App::new()
            .app_data(state.clone())
            .app_data(sync_data.clone())
            .app_data(metrics.clone())
            .app_data(edge.clone())
            .app_data(change_streams.clone())
            .app_data(crate::http::store::json_config(
                crate::http::store::MAX_BODY_BYTES,
            ))
            .wrap(actix_web::middleware::from_fn(crate::http::edge::guard))
            .wrap(actix_web::middleware::from_fn(
                crate::http::metrics::observe,
            ))
            .configure(configure_app)
    })
    .on_connect(move |io, data| connections.on_connect(io, data))
    .client_request_timeout(config.header_timeout)
    .keep_alive(config.keep_alive_timeout)
    // Signals are the binary's business (see `RunningApp::run_until`); tests send none.
    .disable_signals()
    .workers(workers)
    .shutdown_timeout(config.shutdown_timeout.as_secs());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls),
        None => server.listen(listener),
    };
    let server = match server {
        Ok(server) => server.run(),
        Err(source) => {
            database.close().await;
            return Err(AppError::Bind { addr, source });
        }
    };
    let handle = server.handle();
    let server = tokio::spawn(server);
    tracing::info!(address = %addr, scheme, "listening for HTTP");
    Ok(RunningApp {
        addr,
        scheme,
        handle,
        server,
        database,
        sync: sync_sessions,
        deliverer,
        nats,
        change_streams: change_streams_handle,
    })
}

impl RunningApp {
    /// The address the HTTP server is bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` (or `https://` with TLS), to build request URLs.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The store the handlers use.
    pub fn store(&self) -> &Store {
        &self.database.store
    }

    /// The embedded Postgres, when running in embedded mode.
    pub fn embedded_postgres(&self) -> Option<&EmbeddedPostgres> {
        self.database.embedded.as_ref()
    }

    /// A handle that stops the HTTP server from elsewhere (`stop(false)` cuts requests short).
    pub fn server_handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Runs until `signal` completes (or the HTTP server fails), then shuts down gracefully.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), AppError> {
        tokio::select! {
            result = &mut self.server => {
                // The server stopped by itself: a fatal error in actix.
                self.database.close().await;
                match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(AppError::Server(e)),
                    Err(join) => Err(AppError::Server(std::io::Error::other(join))),
                }
            }
            () = signal => self.shutdown().await,
        }
    }

    /// Graceful shutdown: stop accepting connections, let in-flight requests finish (up to the
    /// shutdown timeout), close the pool, stop the embedded Postgres.
    pub async fn shutdown(self) -> Result<(), AppError> {
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        self.sync.close_sessions();
        self.change_streams.close();
        self.handle.stop(true).await;
        let result = match self.server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AppError::Server(e)),
            Err(join) => Err(AppError::Server(std::io::Error::other(join))),
        };
        if let Some(d) = self.deliverer {
            d.stop().await;
        }
        if let Some(n) = self.nats {
            n.stop().await;
        }
        self.database.close().await;
        tracing::info!("stopped");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::split_pool;

    #[test]
    fn half_the_pool_goes_to_the_http_workers_when_each_gets_one() {
        assert_eq!(split_pool(16, 2), (8, 4));
        assert_eq!(split_pool(17, 2), (9, 4));
        assert_eq!(split_pool(16, 3), (10, 2));
        assert_eq!(split_pool(4, 2), (2, 1));
        // Too few to share out: everything stays in the shared pool.
        assert_eq!(split_pool(3, 2), (3, 0));
        assert_eq!(split_pool(1, 1), (1, 0));
        assert_eq!(split_pool(16, 0), (8, 8));
    }
}
