//! The `bigpeer` command: `serve`, `migrate` and `config`.

/// mimalloc instead of the system allocator: with glibc's, a sync peer spent about a quarter
/// of its time in malloc and free (see BENCHMARKS.md, Sync).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use bigpeer::app::{AppError, Database};
use bigpeer::config::{Config, Flags, LogFormat};
use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  bigpeer serve
      Run the HTTP API on 127.0.0.1:8080 with an embedded Postgres in ./bigpeer-data
      (made from the Postgres installed on this machine, on first start).
  DATABASE_URL=postgres://bigpeer:secret@db:5432/bigpeer bigpeer serve --listen 0.0.0.0:8080
      Use an existing Postgres and listen on every interface.
  bigpeer migrate --database-url postgres://postgres@127.0.0.1:5432/bigpeer
      Apply pending database migrations and exit (safe to run again).
  bigpeer config --config /etc/bigpeer.toml
      Print the settings bigpeer would run with, passwords masked.
  bigpeer openapi > openapi/openapi.json
      Write the OpenAPI description of the HTTP API (also served at /api/v4/openapi.json).

Settings come from, weakest first: built-in defaults, the config file (--config FILE, or
./bigpeer.toml when present), environment variables, then flags. Exit status: 0 on success,
2 for a configuration error, 1 for any other failure.

The server's own settings (listen address, TLS, admin key, limits, timeouts) are listed by
`bigpeer serve --help`; the key commands' by `bigpeer keys --help`.";

/// bigpeer: an open Big Peer for offline-first apps.
///
/// Stores CRDT JSON documents in Postgres, serves them over an HTTP API and syncs them with
/// small peers. Without a database URL it runs its own Postgres in the data folder.
#[derive(Debug, Parser)]
#[command(name = "bigpeer", version, after_help = EXAMPLES, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API (starting the embedded Postgres when no database URL is set).
    Serve(ServeArgs),
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Print the effective configuration (TOML, passwords masked), then exit.
    Config(ServeArgs),
    /// Manage HTTP API keys (create, list, revoke) directly in the database; with the embedded
    /// Postgres, also while `bigpeer serve` runs on the same data folder.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the webhooks of change data capture (create, list, delete, replay) directly in the
    /// database; with the embedded Postgres, also while `bigpeer serve` runs.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Print the OpenAPI description of the HTTP API (JSON), then exit; the repository keeps it
    /// in openapi/openapi.json.
    Openapi,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it as JSON; the secret ("key") is shown this once only.
    Create {
        /// A name to recognise the key by
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Expiry as an RFC 3339 time, e.g. 2027-01-31T00:00:00Z [default: never]
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// Permissions as JSON: {"read": {"everything": true}, "write": {"queriesByCollection": {"cars": ["true"]}}}
        #[arg(
            long,
            value_name = "JSON",
            default_value = r#"{"read":{"everything":true},"write":{"everything":true}}"#
        )]
        permissions: String,
        /// Print only the secret, on a line of its own (KEY=$(bigpeer keys create --name me --quiet))
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the keys as JSON (without their secrets).
    List,
    /// Revoke a key by id; it stops working within a second.
    Revoke {
        /// The key's id (key_...)
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// Register a webhook and print it as JSON; its signing secret ("secret") is shown this
    /// once only. It gets the changes committed from now on.
    Create {
        /// Where the events are POSTed
        #[arg(long)]
        url: String,
        /// Only the changes of this collection (repeatable) [default: every collection]
        #[arg(long = "collection", value_name = "NAME")]
        collections: Vec<String>,
        /// Only the changes whose new (or, for a removal, old) document matches this DQL expression
        #[arg(long, value_name = "DQL")]
        filter: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the webhooks as JSON (without their secrets).
    List,
    /// Delete a webhook and its delivery history.
    Delete {
        /// The webhook's id (wh_...)
        id: String,
    },
    /// Send changes to a webhook again: every change after --since, or the given deliveries.
    Replay {
        /// The webhook's id (wh_...)
        id: String,
        /// Every change after this position of the change sequence
        #[arg(
            long,
            value_name = "SEQ",
            conflicts_with = "delivery",
            required_unless_present = "delivery"
        )]
        since: Option<i64>,
        /// A delivery to send again (msg_...; repeatable), e.g. a dead one
        #[arg(long, value_name = "ID")]
        delivery: Vec<String>,
    },
}

/// Settings of every subcommand; accepted before or after the subcommand.
#[derive(Debug, Args)]
struct CommonArgs {
    /// Read settings from this TOML file [env: BIGPEER_CONFIG] [default: ./bigpeer.toml when present]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Postgres to use, postgres://USER:PASSWORD@HOST:PORT/DBNAME [env: DATABASE_URL] [default: embedded Postgres]
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Folder for bigpeer's files, the embedded Postgres among them [env: BIGPEER_DATA_DIR] [default: ./bigpeer-data]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<String>,
    /// Folder with initdb and pg_ctl for the embedded Postgres [env: BIGPEER_POSTGRES_BIN_DIR] [default: searched]
    #[arg(long, global = true, value_name = "DIR")]
    postgres_bin_dir: Option<String>,
    /// Log output: pretty or json [env: BIGPEER_LOG_FORMAT] [default: pretty]
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter such as info or bigpeer=debug,sqlx=warn [env: BIGPEER_LOG_LEVEL, then RUST_LOG] [default: info]
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Postgres connections in all, shared and per HTTP worker [env: BIGPEER_POOL_SIZE] [default: 16]
    #[arg(long, global = true, value_name = "N")]
    pool_size: Option<String>,
    /// How long to wait for a Postgres connection, e.g. 500ms, 10s [env: BIGPEER_CONNECT_TIMEOUT] [default: 10s]
    #[arg(long, global = true, value_name = "DURATION")]
    connect_timeout: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address and port of the HTTP API; 0.0.0.0:8080 for every interface [env: BIGPEER_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// How long requests in flight may run on after SIGTERM or Ctrl-C [env: BIGPEER_SHUTDOWN_TIMEOUT] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    shutdown_timeout: Option<String>,
    /// How far ahead of the server's clock a peer's stamps may be; a sync push with a stamp further ahead is refused [env: BIGPEER_MAX_CLOCK_SKEW] [default: 5m]
    #[arg(long, value_name = "DURATION")]
    max_clock_skew: Option<String>,
    /// How long the change log keeps events for the change stream; an older cursor gets 410 changes/requery-required [env: BIGPEER_CHANGES_RETENTION] [default: 7d]
    #[arg(long, value_name = "DURATION")]
    changes_retention: Option<String>,
    /// Time allowed for one webhook request [env: BIGPEER_WEBHOOK_TIMEOUT] [default: 15s]
    #[arg(long, value_name = "DURATION")]
    webhook_timeout: Option<String>,
    /// How long a webhook delivery is retried before it is dead-lettered [env: BIGPEER_WEBHOOK_MAX_AGE] [default: 72h]
    #[arg(long, value_name = "DURATION")]
    webhook_max_age: Option<String>,
    /// Failed webhook attempts in a row after which the webhook is disabled, 0 for never [env: BIGPEER_WEBHOOK_DISABLE_AFTER] [default: 100]
    #[arg(long, value_name = "N")]
    webhook_disable_after: Option<String>,
    /// Do not apply pending migrations at start-up (run `bigpeer migrate` instead) [env: BIGPEER_MIGRATE_ON_START=false]
    #[arg(long)]
    no_migrate: bool,
    /// Every request may read and write everything without a key: for development only [env: BIGPEER_PLAYGROUND]
    #[arg(long)]
    playground: bool,
    /// Webhooks may send to loopback, private and link-local addresses (refused by default) [env: BIGPEER_WEBHOOK_ALLOW_PRIVATE]
    #[arg(long)]
    webhook_allow_private: bool,
    /// Secret for the key-management API /api/v4/admin/keys [env: BIGPEER_ADMIN_KEY] [default: unset, no admin API]
    #[arg(long, value_name = "SECRET")]
    admin_key: Option<String>,
    /// Requests per second one API key may make, bursts of twice that; over it: 429 with Retry-After [env: BIGPEER_RATE_LIMIT_PER_KEY] [default: 0, unlimited]
    #[arg(long, value_name = "N")]
    rate_limit_per_key: Option<String>,
    /// Requests per second one client IP address may make, bursts of twice that [env: BIGPEER_RATE_LIMIT_PER_IP] [default: 0, unlimited]
    #[arg(long, value_name = "N")]
    rate_limit_per_ip: Option<String>,
    /// Open connections in all; a connection over the cap is closed at once [env: BIGPEER_MAX_CONNECTIONS] [default: 10000; 0: no cap]
    #[arg(long, value_name = "N")]
    max_connections: Option<String>,
    /// Open connections per client IP address [env: BIGPEER_MAX_CONNECTIONS_PER_IP] [default: 256; 0: no cap]
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<String>,
    /// How long a client may take to send a request's head [env: BIGPEER_HEADER_TIMEOUT] [default: 5s]
    #[arg(long, value_name = "DURATION")]
    header_timeout: Option<String>,
    /// How long a client may take to send a request's body, from its head [env: BIGPEER_BODY_TIMEOUT] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    body_timeout: Option<String>,
    /// How long an idle HTTP connection stays open [env: BIGPEER_KEEP_ALIVE_TIMEOUT] [default: 5s]
    #[arg(long, value_name = "DURATION")]
    keep_alive_timeout: Option<String>,
    /// PEM certificate chain; with --tls-key the API is served over HTTPS and sync over wss:// [env: BIGPEER_TLS_CERT] [default: unset, plain HTTP]
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// PEM private key of --tls-cert [env: BIGPEER_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
    /// Application id sent to the authentication webhook as appID [env: BIGPEER_APP_ID] [default: bigpeer]
    #[arg(long, value_name = "ID")]
    app_id: Option<String>,
    /// URL of an authentication webhook (Ditto's contract) for peers' tokens that are not API keys [env: BIGPEER_AUTH_WEBHOOK_URL] [default: unset, API keys only]
    #[arg(long, value_name = "URL")]
    auth_webhook_url: Option<String>,
    /// Provider name sent to the authentication webhook [env: BIGPEER_AUTH_WEBHOOK_PROVIDER] [default: bigpeer]
    #[arg(long, value_name = "NAME")]
    auth_webhook_provider: Option<String>,
    /// Signs webhook requests with HMAC-SHA256 (X-Bigpeer-Signature) [env: BIGPEER_AUTH_WEBHOOK_SECRET] [default: unset, unsigned]
    #[arg(long, value_name = "SECRET")]
    auth_webhook_secret: Option<String>,
    /// NATS server(s) of the JetStream sink, nats://HOST:PORT; every change event is published there [env: BIGPEER_NATS_URL] [default: unset, no sink]
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// Events go to <PREFIX>.<collection> [env: BIGPEER_NATS_SUBJECT_PREFIX] [default: bigpeer]
    #[arg(long, value_name = "PREFIX")]
    nats_subject_prefix: Option<String>,
}

impl Cli {
    fn flags(&self) -> Flags {
        let c = &self.common;
        let mut flags = Flags {
            config: c.config.clone(),
            database_url: c.database_url.clone(),
            data_dir: c.data_dir.clone(),
            postgres_bin_dir: c.postgres_bin_dir.clone(),
            log_format: c.log_format.clone(),
            log_level: c.log_level.clone(),
            pool_size: c.pool_size.clone(),
            connect_timeout: c.connect_timeout.clone(),
            ..Flags::default()
        };
        if let Command::Serve(s) | Command::Config(s) = &self.command {
            flags.listen = s.listen.clone();
            flags.shutdown_timeout = s.shutdown_timeout.clone();
            flags.max_clock_skew = s.max_clock_skew.clone();
            flags.changes_retention = s.changes_retention.clone();
            flags.webhook_timeout = s.webhook_timeout.clone();
            flags.webhook_max_age = s.webhook_max_age.clone();
            flags.webhook_disable_after = s.webhook_disable_after.clone();
            flags.no_migrate = s.no_migrate;
            flags.playground = s.playground;
            flags.webhook_allow_private = s.webhook_allow_private;
            flags.admin_key = s.admin_key.clone();
            flags.rate_limit_per_key = s.rate_limit_per_key.clone();
            flags.rate_limit_per_ip = s.rate_limit_per_ip.clone();
            flags.max_connections = s.max_connections.clone();
            flags.max_connections_per_ip = s.max_connections_per_ip.clone();
            flags.header_timeout = s.header_timeout.clone();
            flags.body_timeout = s.body_timeout.clone();
            flags.keep_alive_timeout = s.keep_alive_timeout.clone();
            flags.tls_cert = s.tls_cert.clone();
            flags.tls_key = s.tls_key.clone();
            flags.app_id = s.app_id.clone();
            flags.auth_webhook_url = s.auth_webhook_url.clone();
            flags.auth_webhook_provider = s.auth_webhook_provider.clone();
            flags.auth_webhook_secret = s.auth_webhook_secret.clone();
            flags.nats_url = s.nats_url.clone();
            flags.nats_subject_prefix = s.nats_subject_prefix.clone();
        }
        flags
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        print!("{}", bigpeer::http::openapi::spec_json());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&cli.flags()) {
        Ok(config) => config,
        Err(err) => return report(&AppError::Config(err), None),
    };
    if let Command::Config(_) = cli.command {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    bigpeer::logging::init(config.log_format, &config.log_level);
    let env_names = std::env::vars_os().map(|(name, _)| name.to_string_lossy().into_owned());
    for (name, close) in bigpeer::config::unknown_env_vars(env_names) {
        match close {
            Some(close) => tracing::warn!(
                "ignoring unknown environment variable {name} (did you mean {close}?)"
            ),
            None => tracing::warn!("ignoring unknown environment variable {name}"),
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let log_format = config.log_format;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(_) => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::Keys(ref k) => keys(config, k).await,
            Command::Webhooks(ref w) => webhooks(config, w).await,
            Command::Config(_) | Command::Openapi => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err, Some(log_format)),
    }
}

async fn serve(config: Config) -> Result<(), AppError> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting bigpeer");
    // A signal during start-up stops it; whatever was started (the embedded Postgres) is
    // stopped again as its owner is dropped.
    let app = tokio::select! {
        app = bigpeer::spawn_app(config) => app?,
        () = shutdown_signal() => {
            tracing::info!("start-up interrupted");
            return Ok(());
        }
    };
    tracing::info!(url = %app.url(), "bigpeer is ready");
    let force = app.server_handle();
    app.run_until(async move {
        shutdown_signal().await;
        // A second signal cuts the requests in flight short.
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::warn!("second signal: stopping without waiting for requests in flight");
            force.stop(false).await;
        });
    })
    .await
}

async fn migrate(config: Config) -> Result<(), AppError> {
    let database = Database::open_beside_server(&config).await?;
    let result = database.migrate().await;
    database.close().await;
    let applied = result?;
    let migrations = bigpeer::store::MIGRATOR.iter().count();
    if applied == 0 {
        tracing::info!(migrations, "the database schema was already up to date");
    } else {
        tracing::info!(
            applied,
            migrations,
            "applied {applied} migrations: the database schema is up to date"
        );
    }
    Ok(())
}

async fn keys(config: Config, command: &KeysCommand) -> Result<(), AppError> {
    let database = Database::open_beside_server(&config).await?;
    let result = keys_in(&database, &config, command).await;
    database.close().await;
    result
}

async fn keys_in(
    database: &Database,
    config: &Config,
    command: &KeysCommand,
) -> Result<(), AppError> {
    use bigpeer::auth::{format_rfc3339, parse_rfc3339, AuthError, KeyStore, NewKey, Permissions};
    if config.migrate_on_start {
        database.migrate().await?;
    }
    let store = KeyStore::new(database.store.clone());
    let show = |k: &bigpeer::auth::ApiKey, secret: Option<&str>| {
        let mut v = serde_json::json!({
            "id": k.id, "name": k.name, "description": k.description, "prefix": k.prefix,
            "permissions": k.permissions, "createdAt": format_rfc3339(k.created_at),
            "expiresAt": k.expires_at.map(format_rfc3339), "revokedAt": k.revoked_at.map(format_rfc3339),
        });
        if let (Some(s), Some(o)) = (secret, v.as_object_mut()) {
            o.insert("key".into(), serde_json::Value::String(s.to_owned()));
        }
        v
    };
    let bad = |message: String| AppError::Auth(AuthError::InvalidRequest(message));
    match command {
        KeysCommand::Create {
            name,
            description,
            expires_at,
            permissions,
            quiet,
        } => {
            let permissions: Permissions = serde_json::from_str(permissions)
                .map_err(|e| bad(format!("--permissions is not valid: {e}")))?;
            bigpeer::service::validate_permissions(&permissions).map_err(|e| bad(e.to_string()))?;
            let expires_at = match expires_at {
                None => None,
                Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
                    bad(format!(
                        "--expires-at {t:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z"
                    ))
                })?),
            };
            let new = NewKey {
                name: name.clone(),
                description: description.clone(),
                expires_at,
                permissions,
            };
            let created = store.create(new).await.map_err(AppError::Auth)?;
            if *quiet {
                println!("{}", created.secret);
            } else {
                println!("{}", show(&created.key, Some(&created.secret)));
            }
        }
        KeysCommand::List => {
            let keys = store.list().await.map_err(AppError::Auth)?;
            let list: Vec<serde_json::Value> = keys.iter().map(|k| show(k, None)).collect();
            println!("{}", serde_json::Value::Array(list));
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke(id).await.map_err(AppError::Auth)? {
                return Err(bad(format!("there is no key {id:?}")));
            }
            println!("{}", serde_json::json!({ "revoked": id }));
        }
    }
    Ok(())
}

async fn webhooks(config: Config, command: &WebhooksCommand) -> Result<(), AppError> {
    let database = Database::open_beside_server(&config).await?;
    let result = webhooks_in(&database, &config, command).await;
    database.close().await;
    result
}

async fn webhooks_in(
    database: &Database,
    config: &Config,
    command: &WebhooksCommand,
) -> Result<(), AppError> {
    use bigpeer::auth::format_rfc3339;
    use bigpeer::webhooks::{NewWebhook, Registry, Replay};
    if config.migrate_on_start {
        database.migrate().await?;
    }
    let registry = Registry::new(database.store.clone(), config.webhook_allow_private);
    let show = |w: &bigpeer::store::WebhookRow, with_secret: bool| {
        let mut v = serde_json::json!({
            "id": w.id, "url": w.url, "collections": w.collections, "filter": w.filter,
            "description": w.description, "enabled": w.enabled,
            "disabledReason": w.disabled_reason, "position": w.position,
            "consecutiveFailures": w.consecutive_failures,
            "createdAt": format_rfc3339(w.created_at), "updatedAt": format_rfc3339(w.updated_at),
        });
        if let (true, Some(o)) = (with_secret, v.as_object_mut()) {
            o.insert("secret".into(), serde_json::Value::String(w.secret.clone()));
        }
        v
    };
    match command {
        WebhooksCommand::Create {
            url,
            collections,
            filter,
            description,
        } => {
            let created = registry
                .create(NewWebhook {
                    url: url.clone(),
                    collections: (!collections.is_empty()).then(|| collections.clone()),
                    filter: filter.clone(),
                    description: description.clone(),
                })
                .await?;
            println!("{}", show(&created, true));
        }
        WebhooksCommand::List => {
            let all = registry.list().await?;
            let list: Vec<serde_json::Value> = all.iter().map(|w| show(w, false)).collect();
            println!("{}", serde_json::Value::Array(list));
        }
        WebhooksCommand::Delete { id } => {
            registry.delete(id).await?;
            println!("{}", serde_json::json!({ "deleted": id }));
        }
        WebhooksCommand::Replay {
            id,
            since,
            delivery,
        } => {
            let replay = match since {
                Some(s) => Replay::Since(*s),
                None => Replay::Deliveries(delivery.clone()),
            };
            let n = registry.replay(id, replay).await?;
            println!("{}", serde_json::json!({ "replayed": id, "deliveries": n }));
        }
    }
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!("cannot listen for SIGTERM: {err}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
        _ = term.recv() => tracing::info!("received SIGTERM"),
    }
}

/// Prints the error (with its code and hint) and picks the exit status.
fn report(err: &AppError, format: Option<LogFormat>) -> ExitCode {
    let hint = err.hint();
    if format == Some(LogFormat::Json) {
        tracing::error!(
            code = err.code(),
            hint = hint.as_deref().unwrap_or(""),
            "{err}"
        );
    } else {
        eprintln!("error[{}]: {err}", err.code());
        if let Some(hint) = hint {
            eprintln!("  hint: {hint}");
        }
    }
    if err.is_config() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}
