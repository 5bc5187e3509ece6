//! Settings, layered: built-in defaults, then a TOML file (`--config FILE`, or `bigpeer.toml` in
//! the working directory when present), then environment variables, then command-line flags.
//! Every value is checked at start-up; a bad one stops bigpeer with a [`ConfigError`] that names
//! the setting, where the value came from and how to fix it.
//!
//! Adding a setting: a field of [`Config`] (and its default), a row of [`SETTINGS`] (names in
//! each layer, documented default), a field of [`Flags`] and its `clap` argument in `main.rs`, a
//! parse step in `Config::from_layers`, a line in [`Config::to_toml`] and a row in the README's
//! table (a test compares the README with [`SETTINGS`]).
//!
//! Why not `figment` (weighed for issue 18): the layering itself is `Layers`, some 25 lines.
//! Everything else here is the checking and its messages, which figment would not replace:
//! - errors name the exact origin (`BIGPEER_LOG_LEVEL` or `RUST_LOG`, `--no-migrate`, the file),
//!   figment's metadata names a provider ("environment variable(s)"), so every variable with a
//!   second name (`DATABASE_URL`, `RUST_LOG`) and every flag would need its own provider;
//! - its `Env` provider guesses types (`BIGPEER_ADMIN_KEY=1234567890123456` becomes an integer,
//!   `"x"` loses its quotes), while text from the environment and flags stays text here;
//! - a missing `--config` file, a TOML syntax error with its line, and an unknown key with a
//!   suggestion are our own errors: figment's `Toml::file` ignores a missing file (and looks for
//!   a relative one in every parent folder) and words the others its own way, so the file would
//!   still be read here first;
//! - serde extraction stops with figment's message ("invalid type: found ..."), not
//!   [`ConfigError::InvalidValue`] with its reason and hint, so each key would still be read as
//!   a raw value with its origin and checked here.
//!
//! The result would be longer, with one more dependency, for the same messages.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The settings bigpeer runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address and port of the HTTP API.
    pub listen: SocketAddr,
    /// External Postgres; `None` runs the embedded Postgres in `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// Where bigpeer keeps its files (the embedded Postgres cluster among them).
    pub data_dir: PathBuf,
    /// Folder with `initdb` and `pg_ctl` for the embedded Postgres; searched for when `None`.
    pub postgres_bin_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    /// A `tracing` filter: `info`, or `bigpeer=debug,sqlx=warn`.
    pub log_level: String,
    /// Postgres connections in all: the shared pool's and the HTTP workers' read pools'
    /// (`app::split_pool`).
    pub pool_size: u32,
    /// How long to wait for a Postgres connection.
    pub connect_timeout: Duration,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// How far ahead of this server's clock a peer's stamps may be; a push with a stamp further
    /// ahead is refused (`sync/clock-skew`).
    pub max_clock_skew: Duration,
    /// How long the change log keeps events (`GET /api/v4/changes`); a cursor older than that
    /// gets `changes/requery-required`.
    pub changes_retention: Duration,
    /// Time allowed for one webhook request.
    pub webhook_timeout: Duration,
    /// How long a webhook delivery is retried before it is dead-lettered.
    pub webhook_max_age: Duration,
    /// Failed attempts in a row after which a webhook is disabled (0: never).
    pub webhook_disable_after: u32,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// Grant every permission to every request, without a key (development only).
    pub playground: bool,
    /// Webhooks may send to loopback, private and link-local addresses.
    pub webhook_allow_private: bool,
    /// The key that may manage API keys over `/api/v4/admin/keys`; unset: no admin API.
    pub admin_key: Option<AdminKey>,
    /// Requests per second one API key may make (bursts of twice that); 0: unlimited.
    pub rate_limit_per_key: u32,
    /// Requests per second one client IP address may make (bursts of twice that); 0: unlimited.
    pub rate_limit_per_ip: u32,
    /// Open connections in all; 0: no cap.
    pub max_connections: u32,
    /// Open connections per client IP address; 0: no cap.
    pub max_connections_per_ip: u32,
    /// How long a client may take to send a request's head.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, from its head.
    pub body_timeout: Duration,
    /// How long an idle connection stays open.
    pub keep_alive_timeout: Duration,
    /// PEM certificate chain: with `tls_key`, the server speaks HTTPS (and `wss://`) only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The application id sent to the authentication webhook (`appID`).
    pub app_id: String,
    /// Where peers' tokens that are not API keys are checked; unset: API keys only.
    pub auth_webhook_url: Option<String>,
    /// The provider name sent to the authentication webhook.
    pub auth_webhook_provider: String,
    /// Signs webhook requests (`X-Bigpeer-Signature`) when set.
    pub auth_webhook_secret: Option<AdminKey>,
    /// The NATS server(s) of the JetStream sink; unset: no sink.
    pub nats_url: Option<NatsUrl>,
    /// Events are published to `<nats_subject_prefix>.<collection>`.
    pub nats_subject_prefix: String,
}

/// The admin key: never shown in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey(String);

impl AdminKey {
    pub fn new(key: impl Into<String>) -> AdminKey {
        AdminKey(key.into())
    }

    /// The key itself: compare it, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminKey(***)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            data_dir: PathBuf::from("./bigpeer-data"),
            postgres_bin_dir: None,
            log_format: LogFormat::Pretty,
            log_level: "info".to_string(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            max_clock_skew: Duration::from_secs(300),
            changes_retention: Duration::from_secs(7 * 24 * 3600),
            webhook_timeout: Duration::from_secs(15),
            webhook_max_age: Duration::from_secs(72 * 3600),
            webhook_disable_after: 100,
            migrate_on_start: true,
            playground: false,
            webhook_allow_private: false,
            admin_key: None,
            rate_limit_per_key: 0,
            rate_limit_per_ip: 0,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(5),
            tls_cert: None,
            tls_key: None,
            app_id: "bigpeer".to_string(),
            auth_webhook_url: None,
            auth_webhook_provider: "bigpeer".to_string(),
            auth_webhook_secret: None,
            nats_url: None,
            nats_subject_prefix: "bigpeer".to_string(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A Postgres URL whose password never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The full URL, password included: pass it to the driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***`.
    pub fn masked(&self) -> String {
        mask_password(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.masked())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// NATS server URLs (comma-separated) whose credentials never show in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrl(String);

impl NatsUrl {
    pub fn new(url: impl Into<String>) -> NatsUrl {
        NatsUrl(url.into())
    }

    /// The URLs, credentials included: pass them to the client, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URLs with their credentials replaced by `***`.
    pub fn masked(&self) -> String {
        mask_nats_url(&self.0)
    }
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsUrl({})", self.masked())
    }
}

/// Masks the credentials of NATS URLs (comma-separated): `nats://user:***@host`, and a token
/// (`nats://TOKEN@host`) entirely, `nats://***@host`.
pub fn mask_nats_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let Some(scheme_end) = url.find("://") else {
                return url.to_owned();
            };
            let rest_start = scheme_end + 3;
            let authority_end = url[rest_start..]
                .find(['/', '?', '#'])
                .map_or(url.len(), |i| rest_start + i);
            let Some(at) = url[rest_start..authority_end].rfind('@') else {
                return url.to_owned();
            };
            let userinfo = &url[rest_start..rest_start + at];
            let masked = match userinfo.find(':') {
                Some(colon) => format!("{}:***", &userinfo[..colon]),
                None => "***".to_owned(),
            };
            format!("{}{masked}{}", &url[..rest_start], &url[rest_start + at..])
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Replaces the password of a `postgres://user:password@host/db` URL (and any `password=` query
/// or key/value parameter) with `***`.
pub fn mask_password(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    // `?password=...` and key/value strings (`host=x password=y`).
    let mut masked = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let value_start = i + "password=".len();
        masked.push_str(&rest[..value_start]);
        let value_len = rest[value_start..]
            .find(['&', ' ', '#'])
            .unwrap_or(rest.len() - value_start);
        masked.push_str("***");
        rest = &rest[value_start + value_len..];
    }
    masked.push_str(rest);
    masked
}

/// Where a value came from; errors name it so the user knows what to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "in config file \"{}\"", path.display()),
            Origin::Env(var) => write!(f, "in environment variable {var}"),
            Origin::Flag(flag) => write!(f, "on the command line ({flag})"),
        }
    }
}

/// A setting's names in each layer, its default and what it does. The single source for the
/// README's configuration table (a test checks that they agree).
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub env: &'static [&'static str],
    pub flag: &'static str,
    pub default: &'static str,
    pub about: &'static str,
}

/// Every setting.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "listen",
        env: &["BIGPEER_LISTEN"],
        flag: "--listen",
        default: "127.0.0.1:8080",
        about: "address and port of the HTTP API (IP:PORT; port 0 picks a free port)",
    },
    Setting {
        key: "database_url",
        env: &["DATABASE_URL"],
        flag: "--database-url",
        default: "(unset: embedded Postgres)",
        about: "Postgres to use, as postgres://USER:PASSWORD@HOST:PORT/DBNAME",
    },
    Setting {
        key: "data_dir",
        env: &["BIGPEER_DATA_DIR"],
        flag: "--data-dir",
        default: "./bigpeer-data",
        about: "folder for bigpeer's files; the embedded Postgres lives in <data_dir>/postgres",
    },
    Setting {
        key: "postgres_bin_dir",
        env: &["BIGPEER_POSTGRES_BIN_DIR"],
        flag: "--postgres-bin-dir",
        default: "(searched)",
        about: "folder with initdb and pg_ctl for the embedded Postgres",
    },
    Setting {
        key: "log_format",
        env: &["BIGPEER_LOG_FORMAT"],
        flag: "--log-format",
        default: "pretty",
        about: "log output: pretty (for people) or json (one object per line)",
    },
    Setting {
        key: "log_level",
        env: &["BIGPEER_LOG_LEVEL", "RUST_LOG"],
        flag: "--log-level",
        default: "info",
        about:
            "log filter: error, warn, info, debug, trace, or per module (bigpeer=debug,sqlx=warn)",
    },
    Setting {
        key: "pool_size",
        env: &["BIGPEER_POOL_SIZE"],
        flag: "--pool-size",
        default: "16",
        about: "Postgres connections in all (1 to 10000): half are shared by writes and sync, half split among the HTTP workers for their reads",
    },
    Setting {
        key: "connect_timeout",
        env: &["BIGPEER_CONNECT_TIMEOUT"],
        flag: "--connect-timeout",
        default: "10s",
        about: "how long to wait for a Postgres connection (500ms, 10s, 2m)",
    },
    Setting {
        key: "shutdown_timeout",
        env: &["BIGPEER_SHUTDOWN_TIMEOUT"],
        flag: "--shutdown-timeout",
        default: "30s",
        about: "how long in-flight requests may run on after SIGTERM or Ctrl-C",
    },
    Setting {
        key: "max_clock_skew",
        env: &["BIGPEER_MAX_CLOCK_SKEW"],
        flag: "--max-clock-skew",
        default: "5m",
        about: "how far ahead of the server's clock a peer's stamps may be; a sync push with a stamp further ahead is refused (sync/clock-skew)",
    },
    Setting {
        key: "webhook_timeout",
        env: &["BIGPEER_WEBHOOK_TIMEOUT"],
        flag: "--webhook-timeout",
        default: "15s",
        about: "time allowed for one webhook request; a slower answer is a failed attempt",
    },
    Setting {
        key: "webhook_max_age",
        env: &["BIGPEER_WEBHOOK_MAX_AGE"],
        flag: "--webhook-max-age",
        default: "72h",
        about: "how long a webhook delivery is retried (exponential backoff) before it is dead-lettered",
    },
    Setting {
        key: "webhook_disable_after",
        env: &["BIGPEER_WEBHOOK_DISABLE_AFTER"],
        flag: "--webhook-disable-after",
        default: "100",
        about: "failed webhook attempts in a row after which the webhook is disabled (0: never)",
    },
    Setting {
        key: "changes_retention",
        env: &["BIGPEER_CHANGES_RETENTION"],
        flag: "--changes-retention",
        default: "7d",
        about: "how long the change log keeps events for the change stream (GET /api/v4/changes); a cursor older than that gets 410 changes/requery-required",
    },
    Setting {
        key: "migrate_on_start",
        env: &["BIGPEER_MIGRATE_ON_START"],
        flag: "--no-migrate",
        default: "true",
        about: "apply pending database migrations when serve starts (the flag turns it off)",
    },
    Setting {
        key: "playground",
        env: &["BIGPEER_PLAYGROUND"],
        flag: "--playground",
        default: "false",
        about: "every request may read and write everything without a key: development only",
    },
    Setting {
        key: "webhook_allow_private",
        env: &["BIGPEER_WEBHOOK_ALLOW_PRIVATE"],
        flag: "--webhook-allow-private",
        default: "false",
        about: "webhooks may send to loopback, private and link-local addresses (refused by default: the requests leave from inside your network)",
    },
    Setting {
        key: "admin_key",
        env: &["BIGPEER_ADMIN_KEY"],
        flag: "--admin-key",
        default: "(unset: no admin API)",
        about: "secret for the key-management API /api/v4/admin/keys (at least 16 characters)",
    },
    Setting {
        key: "rate_limit_per_key",
        env: &["BIGPEER_RATE_LIMIT_PER_KEY"],
        flag: "--rate-limit-per-key",
        default: "0",
        about: "requests per second one API key may make, bursts of twice that (0: unlimited); over it: 429 with Retry-After",
    },
    Setting {
        key: "rate_limit_per_ip",
        env: &["BIGPEER_RATE_LIMIT_PER_IP"],
        flag: "--rate-limit-per-ip",
        default: "0",
        about: "requests per second one client IP address may make, bursts of twice that (0: unlimited)",
    },
    Setting {
        key: "max_connections",
        env: &["BIGPEER_MAX_CONNECTIONS"],
        flag: "--max-connections",
        default: "10000",
        about: "open connections in all (0: no cap); a connection over the cap is closed at once",
    },
    Setting {
        key: "max_connections_per_ip",
        env: &["BIGPEER_MAX_CONNECTIONS_PER_IP"],
        flag: "--max-connections-per-ip",
        default: "256",
        about: "open connections per client IP address (0: no cap); behind a proxy or a large NAT raise it or set 0",
    },
    Setting {
        key: "header_timeout",
        env: &["BIGPEER_HEADER_TIMEOUT"],
        flag: "--header-timeout",
        default: "5s",
        about: "how long a client may take to send a request's head (408 and close); between requests, a connection may wait keep_alive_timeout plus this",
    },
    Setting {
        key: "body_timeout",
        env: &["BIGPEER_BODY_TIMEOUT"],
        flag: "--body-timeout",
        default: "30s",
        about: "how long a client may take to send a request's body, from its head (408 request/timeout and close)",
    },
    Setting {
        key: "keep_alive_timeout",
        env: &["BIGPEER_KEEP_ALIVE_TIMEOUT"],
        flag: "--keep-alive-timeout",
        default: "5s",
        about: "how long an idle HTTP connection stays open",
    },
    Setting {
        key: "tls_cert",
        env: &["BIGPEER_TLS_CERT"],
        flag: "--tls-cert",
        default: "(unset: plain HTTP)",
        about: "PEM certificate chain; with tls_key the API is served over HTTPS (HTTP/1.1 and HTTP/2) and sync over wss://",
    },
    Setting {
        key: "tls_key",
        env: &["BIGPEER_TLS_KEY"],
        flag: "--tls-key",
        default: "(unset)",
        about: "PEM private key (PKCS#8, PKCS#1 or SEC1) of tls_cert",
    },
    Setting {
        key: "app_id",
        env: &["BIGPEER_APP_ID"],
        flag: "--app-id",
        default: "bigpeer",
        about: "the application id sent to the authentication webhook as appID",
    },
    Setting {
        key: "auth_webhook_url",
        env: &["BIGPEER_AUTH_WEBHOOK_URL"],
        flag: "--auth-webhook-url",
        default: "(unset: peers log in with API keys only)",
        about: "http(s) URL of an authentication webhook (Ditto's contract) that checks peers' tokens that are not API keys",
    },
    Setting {
        key: "auth_webhook_provider",
        env: &["BIGPEER_AUTH_WEBHOOK_PROVIDER"],
        flag: "--auth-webhook-provider",
        default: "bigpeer",
        about: "the provider name sent to the authentication webhook",
    },
    Setting {
        key: "auth_webhook_secret",
        env: &["BIGPEER_AUTH_WEBHOOK_SECRET"],
        flag: "--auth-webhook-secret",
        default: "(unset: requests are not signed)",
        about: "signs webhook requests: X-Bigpeer-Signature t=UNIX,v1=hex HMAC-SHA256 of \"UNIX.BODY\" (at least 16 characters)",
    },
    Setting {
        key: "nats_url",
        env: &["BIGPEER_NATS_URL"],
        flag: "--nats-url",
        default: "(unset: no NATS sink)",
        about: "NATS server(s) of the JetStream sink, nats://[USER:PASSWORD@]HOST:PORT or tls://..., several separated by commas; every change event is published there (credentials are masked in logs)",
    },
    Setting {
        key: "nats_subject_prefix",
        env: &["BIGPEER_NATS_SUBJECT_PREFIX"],
        flag: "--nats-subject-prefix",
        default: "bigpeer",
        about: "events go to <prefix>.<collection> (requeryRequired to <prefix>._requery); one or more tokens of letters, digits, - and _, separated by dots",
    },
];

/// Environment variable naming the config file (like `--config`).
pub const CONFIG_ENV: &str = "BIGPEER_CONFIG";
/// Config file read from the working directory when no other is named.
pub const DEFAULT_CONFIG_FILE: &str = "bigpeer.toml";

/// Names of `BIGPEER_*` variables in `vars` that bigpeer does not know (typos, most likely),
/// each with the closest known name when there is one.
pub fn unknown_env_vars(
    vars: impl IntoIterator<Item = String>,
) -> Vec<(String, Option<&'static str>)> {
    let known: Vec<&'static str> = SETTINGS
        .iter()
        .flat_map(|s| s.env.iter().copied())
        .chain([CONFIG_ENV])
        .filter(|v| v.starts_with("BIGPEER_"))
        .collect();
    vars.into_iter()
        .filter(|v| v.starts_with("BIGPEER_") && !v.starts_with("BIGPEER_TEST_"))
        .filter(|v| !known.contains(&v.as_str()))
        .map(|v| {
            let close = known
                .iter()
                .map(|k| (edit_distance(&v, k), *k))
                .filter(|(d, _)| *d <= 3)
                .min_by_key(|(d, _)| *d)
                .map(|(_, k)| k);
            (v, close)
        })
        .collect()
}

/// Values given on the command line, unparsed: they are checked like the other layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub data_dir: Option<String>,
    pub postgres_bin_dir: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub pool_size: Option<String>,
    pub connect_timeout: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub max_clock_skew: Option<String>,
    pub changes_retention: Option<String>,
    pub webhook_timeout: Option<String>,
    pub webhook_max_age: Option<String>,
    pub webhook_disable_after: Option<String>,
    pub no_migrate: bool,
    pub playground: bool,
    pub webhook_allow_private: bool,
    pub admin_key: Option<String>,
    pub rate_limit_per_key: Option<String>,
    pub rate_limit_per_ip: Option<String>,
    pub max_connections: Option<String>,
    pub max_connections_per_ip: Option<String>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub keep_alive_timeout: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub app_id: Option<String>,
    pub auth_webhook_url: Option<String>,
    pub auth_webhook_provider: Option<String>,
    pub auth_webhook_secret: Option<String>,
    pub nats_url: Option<String>,
    pub nats_subject_prefix: Option<String>,
}

/// A configuration problem. Messages are lowercase and name the setting and its origin; `hint`
/// says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file \"{}\" does not exist", path.display())]
    FileNotFound { path: PathBuf },
    #[error("cannot read config file \"{}\": {source}", path.display())]
    FileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file \"{}\" is not valid TOML: {message}", path.display())]
    FileSyntax { path: PathBuf, message: String },
    #[error("unknown key \"{key}\" in config file \"{}\"", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        suggestion: Option<&'static str>,
    },
    #[error("invalid {key} {value} {origin}: {reason}")]
    InvalidValue {
        key: &'static str,
        value: String,
        origin: Origin,
        reason: String,
        hint: String,
    },
}

impl ConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::FileNotFound { .. } => "config/file-not-found",
            ConfigError::FileUnreadable { .. } => "config/file-unreadable",
            ConfigError::FileSyntax { .. } => "config/file-syntax",
            ConfigError::UnknownKey { .. } => "config/unknown-key",
            ConfigError::InvalidValue { .. } => "config/invalid-value",
        }
    }

    /// How to fix it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ConfigError::FileNotFound { .. } => Some(format!(
                "check the path given to --config or {CONFIG_ENV}, or leave both unset to use ./{DEFAULT_CONFIG_FILE} when present"
            )),
            ConfigError::FileUnreadable { .. } => {
                Some("check the file's permissions".to_string())
            }
            ConfigError::FileSyntax { .. } => Some(
                "write one `key = value` per line, strings in double quotes (listen = \"0.0.0.0:8080\")"
                    .to_string(),
            ),
            ConfigError::UnknownKey { suggestion, .. } => {
                let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
                Some(match suggestion {
                    Some(s) => format!("did you mean \"{s}\"? known keys: {}", known.join(", ")),
                    None => format!("known keys: {}", known.join(", ")),
                })
            }
            ConfigError::InvalidValue { hint, .. } => Some(hint.clone()),
        }
    }
}

/// A raw value from one layer.
#[derive(Debug, Clone)]
enum Raw {
    Text(String),
    Toml(toml::Value),
}

impl Raw {
    /// Shown in error messages; secrets masked.
    fn shown(&self, key: &str) -> String {
        let text = match self {
            Raw::Text(t) => format!("{t:?}"),
            Raw::Toml(toml::Value::String(s)) => format!("{s:?}"),
            Raw::Toml(v) => v.to_string(),
        };
        match key {
            "database_url" => mask_password(&text),
            "nats_url" => mask_nats_url(&text),
            // A secret is never echoed back, not even in an error about it.
            "admin_key" => "\"***\"".to_owned(),
            _ => text,
        }
    }
}

/// The winning value of each setting, with its origin.
#[derive(Debug, Default)]
struct Layers {
    values: Vec<(&'static str, Raw, Origin)>,
}

impl Layers {
    /// Later layers override earlier ones.
    fn set(&mut self, key: &'static str, raw: Raw, origin: Origin) {
        self.values.retain(|(k, _, _)| *k != key);
        self.values.push((key, raw, origin));
    }

    fn get(&self, key: &str) -> Option<(&Raw, &Origin)> {
        self.values
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, r, o)| (r, o))
    }
}

impl Config {
    /// Reads the process environment and the config file, then applies `flags`.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        Config::resolve(flags, &env, Path::new("."))
    }

    /// Layers defaults, the config file, `env` and `flags`. `cwd` is where `bigpeer.toml` is
    /// looked for. Empty environment variables count as unset.
    pub fn resolve(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
        cwd: &Path,
    ) -> Result<Config, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let mut layers = Layers::default();

        let file = match (&flags.config, env(CONFIG_ENV)) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(path)) => Some(PathBuf::from(path)),
            (None, None) => {
                let default = cwd.join(DEFAULT_CONFIG_FILE);
                default.is_file().then_some(default)
            }
        };
        if let Some(path) = file {
            for (key, value) in read_file(&path)? {
                layers.set(key, Raw::Toml(value), Origin::File(path.clone()));
            }
        }

        for setting in SETTINGS {
            // Listed from strongest to weakest: the first one set wins.
            if let Some((var, value)) = setting
                .env
                .iter()
                .find_map(|var| env(var).map(|v| (*var, v)))
            {
                layers.set(setting.key, Raw::Text(value), Origin::Env(var));
            }
        }

        let flag_values: [(&'static str, &Option<String>); 30] = [
            ("listen", &flags.listen),
            ("database_url", &flags.database_url),
            ("data_dir", &flags.data_dir),
            ("postgres_bin_dir", &flags.postgres_bin_dir),
            ("log_format", &flags.log_format),
            ("log_level", &flags.log_level),
            ("pool_size", &flags.pool_size),
            ("connect_timeout", &flags.connect_timeout),
            ("shutdown_timeout", &flags.shutdown_timeout),
            ("max_clock_skew", &flags.max_clock_skew),
            ("changes_retention", &flags.changes_retention),
            ("webhook_timeout", &flags.webhook_timeout),
            ("webhook_max_age", &flags.webhook_max_age),
            ("webhook_disable_after", &flags.webhook_disable_after),
            ("admin_key", &flags.admin_key),
            ("rate_limit_per_key", &flags.rate_limit_per_key),
            ("rate_limit_per_ip", &flags.rate_limit_per_ip),
            ("max_connections", &flags.max_connections),
            ("max_connections_per_ip", &flags.max_connections_per_ip),
            ("header_timeout", &flags.header_timeout),
            ("body_timeout", &flags.body_timeout),
            ("keep_alive_timeout", &flags.keep_alive_timeout),
            ("tls_cert", &flags.tls_cert),
            ("tls_key", &flags.tls_key),
            ("app_id", &flags.app_id),
            ("auth_webhook_url", &flags.auth_webhook_url),
            ("auth_webhook_provider", &flags.auth_webhook_provider),
            ("auth_webhook_secret", &flags.auth_webhook_secret),
            ("nats_url", &flags.nats_url),
            ("nats_subject_prefix", &flags.nats_subject_prefix),
        ];
        for (key, value) in flag_values {
            if let Some(value) = value {
                layers.set(key, Raw::Text(value.clone()), Origin::Flag(flag_name(key)));
            }
        }
        if flags.playground {
            layers.set(
                "playground",
                Raw::Toml(toml::Value::Boolean(true)),
                Origin::Flag("--playground"),
            );
        }
        if flags.webhook_allow_private {
            layers.set(
                "webhook_allow_private",
                Raw::Toml(toml::Value::Boolean(true)),
                Origin::Flag("--webhook-allow-private"),
            );
        }
        if flags.no_migrate {
            layers.set(
                "migrate_on_start",
                Raw::Toml(toml::Value::Boolean(false)),
                Origin::Flag("--no-migrate"),
            );
        }

        Config::from_layers(&layers)
    }

    /// The settings as a TOML file (passwords masked; unset options as comments).
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::new();
        out.push_str(&format!("listen = {}\n", quote(&self.listen.to_string())));
        match &self.database_url {
            Some(url) => out.push_str(&format!("database_url = {}\n", quote(&url.masked()))),
            None => out.push_str("# database_url: unset, the embedded Postgres runs in data_dir\n"),
        }
        out.push_str(&format!(
            "data_dir = {}\n",
            quote(&self.data_dir.to_string_lossy())
        ));
        match &self.postgres_bin_dir {
            Some(dir) => out.push_str(&format!(
                "postgres_bin_dir = {}\n",
                quote(&dir.to_string_lossy())
            )),
            None => out.push_str("# postgres_bin_dir: unset, searched\n"),
        }
        let format = match self.log_format {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        };
        out.push_str(&format!("log_format = {}\n", quote(format)));
        out.push_str(&format!("log_level = {}\n", quote(&self.log_level)));
        out.push_str(&format!("pool_size = {}\n", self.pool_size));
        out.push_str(&format!(
            "connect_timeout = {}\n",
            quote(&format_duration(self.connect_timeout))
        ));
        out.push_str(&format!(
            "shutdown_timeout = {}\n",
            quote(&format_duration(self.shutdown_timeout))
        ));
        out.push_str(&format!(
            "max_clock_skew = {}\n",
            quote(&format_duration(self.max_clock_skew))
        ));
        out.push_str(&format!(
            "changes_retention = {}\n",
            quote(&format_duration(self.changes_retention))
        ));
        out.push_str(&format!(
            "webhook_timeout = {}\n",
            quote(&format_duration(self.webhook_timeout))
        ));
        out.push_str(&format!(
            "webhook_max_age = {}\n",
            quote(&format_duration(self.webhook_max_age))
        ));
        out.push_str(&format!(
            "webhook_disable_after = {}\n",
            self.webhook_disable_after
        ));
        out.push_str(&format!("migrate_on_start = {}\n", self.migrate_on_start));
        out.push_str(&format!("playground = {}\n", self.playground));
        out.push_str(&format!(
            "webhook_allow_private = {}\n",
            self.webhook_allow_private
        ));
        match &self.admin_key {
            Some(_) => out.push_str("admin_key = \"***\"\n"),
            None => out.push_str("# admin_key: unset, no admin API\n"),
        }
        out.push_str(&format!(
            "rate_limit_per_key = {}\n",
            self.rate_limit_per_key
        ));
        out.push_str(&format!("rate_limit_per_ip = {}\n", self.rate_limit_per_ip));
        out.push_str(&format!("max_connections = {}\n", self.max_connections));
        out.push_str(&format!(
            "max_connections_per_ip = {}\n",
            self.max_connections_per_ip
        ));
        for (key, value) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("keep_alive_timeout", self.keep_alive_timeout),
        ] {
            out.push_str(&format!("{key} = {}\n", quote(&format_duration(value))));
        }
        for (key, value) in [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)] {
            match value {
                Some(p) => out.push_str(&format!("{key} = {}\n", quote(&p.to_string_lossy()))),
                None => out.push_str(&format!("# {key}: unset\n")),
            }
        }
        out.push_str(&format!("app_id = {}\n", quote(&self.app_id)));
        match &self.auth_webhook_url {
            Some(url) => out.push_str(&format!("auth_webhook_url = {}\n", quote(url))),
            None => out.push_str("# auth_webhook_url: unset, API keys only\n"),
        }
        out.push_str(&format!(
            "auth_webhook_provider = {}\n",
            quote(&self.auth_webhook_provider)
        ));
        match &self.auth_webhook_secret {
            Some(_) => out.push_str("auth_webhook_secret = \"***\"\n"),
            None => out.push_str("# auth_webhook_secret: unset, requests are not signed\n"),
        }
        match &self.nats_url {
            Some(url) => out.push_str(&format!("nats_url = {}\n", quote(&url.masked()))),
            None => out.push_str("# nats_url: unset, no NATS sink\n"),
        }
        out.push_str(&format!(
            "nats_subject_prefix = {}\n",
            quote(&self.nats_subject_prefix)
        ));
        out
    }

    fn from_layers(layers: &Layers) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some((raw, origin)) = layers.get("listen") {
            config.listen = parse_listen(&text(raw, "listen", origin)?)
                .map_err(|(reason, hint)| invalid("listen", raw, origin, reason, hint))?;
        }
        if let Some((raw, origin)) = layers.get("database_url") {
            let url = text(raw, "database_url", origin)?;
            check_database_url(&url)
                .map_err(|(reason, hint)| invalid("database_url", raw, origin, reason, hint))?;
            config.database_url = Some(DatabaseUrl(url));
        }
        if let Some((raw, origin)) = layers.get("data_dir") {
            config.data_dir = non_empty_path(raw, "data_dir", origin)?;
        }
        if let Some((raw, origin)) = layers.get("postgres_bin_dir") {
            config.postgres_bin_dir = Some(non_empty_path(raw, "postgres_bin_dir", origin)?);
        }
        if let Some((raw, origin)) = layers.get("log_format") {
            config.log_format = match text(raw, "log_format", origin)?
                .to_ascii_lowercase()
                .as_str()
            {
                "pretty" | "text" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                _ => {
                    return Err(invalid(
                        "log_format",
                        raw,
                        origin,
                        "expected pretty or json".into(),
                        "use pretty for a terminal, json for a log collector".into(),
                    ))
                }
            };
        }
        if let Some((raw, origin)) = layers.get("log_level") {
            let level = text(raw, "log_level", origin)?;
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
                return Err(invalid(
                    "log_level",
                    raw,
                    origin,
                    format!("not a log filter ({e})"),
                    "use error, warn, info, debug or trace, optionally per module: bigpeer=debug,sqlx=warn".into(),
                ));
            }
            config.log_level = level;
        }
        if let Some((raw, origin)) = layers.get("pool_size") {
            let n = integer(raw, "pool_size", origin)?;
            if !(1..=10_000).contains(&n) {
                return Err(invalid(
                    "pool_size",
                    raw,
                    origin,
                    "must be between 1 and 10000".into(),
                    "a pool needs at least one connection; 16 suits most servers".into(),
                ));
            }
            config.pool_size = n as u32;
        }
        if let Some((raw, origin)) = layers.get("connect_timeout") {
            config.connect_timeout = duration(raw, "connect_timeout", origin)?;
            if config.connect_timeout.is_zero() {
                return Err(invalid(
                    "connect_timeout",
                    raw,
                    origin,
                    "must be longer than zero".into(),
                    "give a duration such as 10s".into(),
                ));
            }
        }
        if let Some((raw, origin)) = layers.get("shutdown_timeout") {
            config.shutdown_timeout = duration(raw, "shutdown_timeout", origin)?;
        }
        if let Some((raw, origin)) = layers.get("max_clock_skew") {
            config.max_clock_skew = duration(raw, "max_clock_skew", origin)?;
        }
        if let Some((raw, origin)) = layers.get("changes_retention") {
            let d = duration(raw, "changes_retention", origin)?;
            if d < Duration::from_secs(60) {
                return Err(invalid(
                    "changes_retention",
                    raw,
                    origin,
                    "must be at least 1m".into(),
                    "write a duration such as 7d, 24h or 30m".into(),
                ));
            }
            config.changes_retention = d;
        }
        for key in ["webhook_timeout", "webhook_max_age"] {
            if let Some((raw, origin)) = layers.get(key) {
                let d = duration(raw, key, origin)?;
                if d < Duration::from_secs(1) {
                    return Err(invalid(
                        key,
                        raw,
                        origin,
                        "must be at least 1s".into(),
                        "write a duration such as 15s, 10m or 72h".into(),
                    ));
                }
                if key == "webhook_timeout" {
                    config.webhook_timeout = d;
                } else {
                    config.webhook_max_age = d;
                }
            }
        }
        if let Some((raw, origin)) = layers.get("webhook_disable_after") {
            let n = integer(raw, "webhook_disable_after", origin)?;
            config.webhook_disable_after = u32::try_from(n).map_err(|_| {
                invalid(
                    "webhook_disable_after",
                    raw,
                    origin,
                    "must be a number from 0 to 4294967295".into(),
                    "give a number of failed attempts, or 0 to never disable".into(),
                )
            })?;
        }
        if let Some((raw, origin)) = layers.get("migrate_on_start") {
            config.migrate_on_start = boolean(raw, "migrate_on_start", origin)?;
        }
        if let Some((raw, origin)) = layers.get("playground") {
            config.playground = boolean(raw, "playground", origin)?;
        }
        if let Some((raw, origin)) = layers.get("webhook_allow_private") {
            config.webhook_allow_private = boolean(raw, "webhook_allow_private", origin)?;
        }
        if let Some((raw, origin)) = layers.get("admin_key") {
            let key = text(raw, "admin_key", origin)?;
            if key.chars().count() < 16 {
                return Err(invalid(
                    "admin_key",
                    raw,
                    origin,
                    "must be at least 16 characters".into(),
                    "use a long random secret, e.g. the output of `openssl rand -hex 32`".into(),
                ));
            }
            config.admin_key = Some(AdminKey(key));
        }
        if let Some((raw, origin)) = layers.get("tls_cert") {
            config.tls_cert = Some(non_empty_path(raw, "tls_cert", origin)?);
        }
        if let Some((raw, origin)) = layers.get("tls_key") {
            config.tls_key = Some(non_empty_path(raw, "tls_key", origin)?);
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            let (key, other) = if config.tls_cert.is_some() {
                ("tls_cert", "tls_key")
            } else {
                ("tls_key", "tls_cert")
            };
            if let Some((raw, origin)) = layers.get(key) {
                return Err(invalid(
                    key,
                    raw,
                    origin,
                    format!("is set but {other} is not"),
                    "give both the certificate (--tls-cert) and its private key (--tls-key)".into(),
                ));
            }
        }
        for key in ["app_id", "auth_webhook_provider"] {
            if let Some((raw, origin)) = layers.get(key) {
                let value = text(raw, key, origin)?;
                if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
                    return Err(invalid(
                        key,
                        raw,
                        origin,
                        "must be 1 to 256 characters without control characters".into(),
                        "give a short name such as my-app".into(),
                    ));
                }
                if key == "app_id" {
                    config.app_id = value;
                } else {
                    config.auth_webhook_provider = value;
                }
            }
        }
        if let Some((raw, origin)) = layers.get("auth_webhook_url") {
            let url = text(raw, "auth_webhook_url", origin)?;
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) {
                return Err(invalid(
                    "auth_webhook_url",
                    raw,
                    origin,
                    "must be an http:// or https:// URL with a host".into(),
                    "give the webhook's full URL, e.g. https://auth.example.com/validate_token"
                        .into(),
                ));
            }
            config.auth_webhook_url = Some(url);
        }
        if let Some((raw, origin)) = layers.get("nats_url") {
            let url = text(raw, "nats_url", origin)?;
            check_nats_url(&url)
                .map_err(|(reason, hint)| invalid("nats_url", raw, origin, reason, hint))?;
            config.nats_url = Some(NatsUrl(url));
        }
        if let Some((raw, origin)) = layers.get("nats_subject_prefix") {
            let prefix = text(raw, "nats_subject_prefix", origin)?;
            check_subject_prefix(&prefix).map_err(|reason| {
                invalid(
                    "nats_subject_prefix",
                    raw,
                    origin,
                    reason,
                    "use tokens of letters, digits, - and _ separated by dots, e.g. bigpeer or acme.cdc".into(),
                )
            })?;
            config.nats_subject_prefix = prefix;
        }
        if let Some((raw, origin)) = layers.get("auth_webhook_secret") {
            let secret = text(raw, "auth_webhook_secret", origin)?;
            if secret.chars().count() < 16 {
                return Err(invalid(
                    "auth_webhook_secret",
                    raw,
                    origin,
                    "must be at least 16 characters".into(),
                    "use a long random secret, e.g. the output of `openssl rand -hex 32`".into(),
                ));
            }
            config.auth_webhook_secret = Some(AdminKey(secret));
        }
        for key in ["rate_limit_per_key", "rate_limit_per_ip"] {
            if let Some((raw, origin)) = layers.get(key) {
                let n = integer(raw, key, origin)?;
                if !(0..=1_000_000).contains(&n) {
                    return Err(invalid(
                        key,
                        raw,
                        origin,
                        "must be between 0 and 1000000".into(),
                        "give requests per second, or 0 for no limit".into(),
                    ));
                }
                if key == "rate_limit_per_key" {
                    config.rate_limit_per_key = n as u32;
                } else {
                    config.rate_limit_per_ip = n as u32;
                }
            }
        }
        for key in ["max_connections", "max_connections_per_ip"] {
            if let Some((raw, origin)) = layers.get(key) {
                let n = integer(raw, key, origin)?;
                if !(0..=10_000_000).contains(&n) {
                    return Err(invalid(
                        key,
                        raw,
                        origin,
                        "must be between 0 and 10000000".into(),
                        "give a number of connections, or 0 for no cap".into(),
                    ));
                }
                if key == "max_connections" {
                    config.max_connections = n as u32;
                } else {
                    config.max_connections_per_ip = n as u32;
                }
            }
        }
        for key in ["header_timeout", "body_timeout", "keep_alive_timeout"] {
            if let Some((raw, origin)) = layers.get(key) {
                let d = duration(raw, key, origin)?;
                if d.is_zero() || d > Duration::from_secs(24 * 3600) {
                    return Err(invalid(
                        key,
                        raw,
                        origin,
                        "must be longer than zero and at most 24h".into(),
                        "give a duration such as 5s or 30s".into(),
                    ));
                }
                match key {
                    "header_timeout" => config.header_timeout = d,
                    "body_timeout" => config.body_timeout = d,
                    _ => config.keep_alive_timeout = d,
                }
            }
        }
        Ok(config)
    }
}

fn flag_name(key: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .map_or("", |s| s.flag)
}

fn invalid(
    key: &'static str,
    raw: &Raw,
    origin: &Origin,
    reason: String,
    hint: String,
) -> ConfigError {
    ConfigError::InvalidValue {
        key,
        value: raw.shown(key),
        origin: origin.clone(),
        reason,
        hint,
    }
}

fn text(raw: &Raw, key: &'static str, origin: &Origin) -> Result<String, ConfigError> {
    match raw {
        Raw::Text(t) => Ok(t.trim().to_string()),
        Raw::Toml(toml::Value::String(s)) => Ok(s.trim().to_string()),
        Raw::Toml(_) => Err(invalid(
            key,
            raw,
            origin,
            "expected a string".into(),
            format!("put the value in double quotes: {key} = \"...\""),
        )),
    }
}

fn non_empty_path(raw: &Raw, key: &'static str, origin: &Origin) -> Result<PathBuf, ConfigError> {
    let t = text(raw, key, origin)?;
    if t.is_empty() {
        return Err(invalid(
            key,
            raw,
            origin,
            "must not be empty".into(),
            "give a folder path".into(),
        ));
    }
    Ok(PathBuf::from(t))
}

fn integer(raw: &Raw, key: &'static str, origin: &Origin) -> Result<i64, ConfigError> {
    let parsed = match raw {
        Raw::Toml(toml::Value::Integer(n)) => Some(*n),
        Raw::Toml(toml::Value::String(s)) | Raw::Text(s) => s.trim().parse().ok(),
        Raw::Toml(_) => None,
    };
    parsed.ok_or_else(|| {
        invalid(
            key,
            raw,
            origin,
            "expected a whole number".into(),
            format!("for example {key} = 16"),
        )
    })
}

fn boolean(raw: &Raw, key: &'static str, origin: &Origin) -> Result<bool, ConfigError> {
    let parsed = match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Some(*b),
        Raw::Toml(toml::Value::String(s)) | Raw::Text(s) => {
            match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            }
        }
        Raw::Toml(_) => None,
    };
    parsed.ok_or_else(|| {
        invalid(
            key,
            raw,
            origin,
            "expected true or false".into(),
            "use true or false".into(),
        )
    })
}

fn duration(raw: &Raw, key: &'static str, origin: &Origin) -> Result<Duration, ConfigError> {
    let parsed = match raw {
        Raw::Toml(toml::Value::Integer(n)) if *n >= 0 => Some(Duration::from_secs(*n as u64)),
        Raw::Toml(toml::Value::String(s)) | Raw::Text(s) => parse_duration(s),
        Raw::Toml(_) => None,
    };
    parsed.ok_or_else(|| {
        invalid(
            key,
            raw,
            origin,
            "expected a duration".into(),
            "write a number with a unit: 500ms, 10s, 2m, 1h (a bare number means seconds)".into(),
        )
    })
}

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 && !d.is_zero() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// `500ms`, `10s`, `2m`, `1h 30m` (humantime's units), or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    humantime::parse_duration(text).ok()
}

type Problem = (String, String);

fn parse_listen(text: &str) -> Result<SocketAddr, Problem> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "write IP:PORT, such as 127.0.0.1:8080 (this machine only), 0.0.0.0:8080 (every interface) or [::]:8080".to_string();
    if let Some(port) = text.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| {
                (
                    "the port must be a number from 0 to 65535".to_string(),
                    hint,
                )
            });
    }
    match text.rsplit_once(':') {
        None => Err(("the port is missing".to_string(), hint)),
        Some((_, port)) if port.parse::<u16>().is_err() => Err((
            "the port must be a number from 0 to 65535".to_string(),
            hint,
        )),
        Some(_) => Err(("the host must be an IP address".to_string(), hint)),
    }
}

/// NATS server URLs: `nats://` or `tls://` with a host, comma-separated.
fn check_nats_url(urls: &str) -> Result<(), Problem> {
    let hint = || {
        "give nats://HOST:PORT (or tls://HOST:PORT), e.g. nats://127.0.0.1:4222; several servers separated by commas".to_owned()
    };
    for one in urls.split(',').map(str::trim) {
        let parsed =
            url::Url::parse(one).map_err(|e| (format!("not a valid URL ({e})"), hint()))?;
        if !matches!(parsed.scheme(), "nats" | "tls") {
            return Err((
                format!(
                    "the scheme must be nats:// or tls://, not {}://",
                    parsed.scheme()
                ),
                hint(),
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(("the URL has no host".to_owned(), hint()));
        }
    }
    Ok(())
}

/// A subject prefix: 1 to 128 bytes of dot-separated tokens of ASCII letters, digits, `-` and
/// `_` (no wildcards, no empty tokens).
pub fn check_subject_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err("has an empty token (two dots in a row, or a dot at an end)".into());
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "the token {token:?} may hold only letters, digits, - and _ (no wildcards or spaces)"
            ));
        }
    }
    Ok(())
}

fn check_database_url(url: &str) -> Result<(), Problem> {
    let hint = "write postgres://USER:PASSWORD@HOST:PORT/DBNAME, or leave it unset to run the embedded Postgres".to_string();
    if url.is_empty() {
        return Err(("must not be empty".to_string(), hint));
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(("expected a postgres:// URL".to_string(), hint));
    }
    crate::store::check_url(url).map_err(|e| {
        (
            format!("not a valid Postgres URL ({})", mask_password(&e)),
            hint,
        )
    })
}

fn read_file(path: &Path) -> Result<Vec<(&'static str, toml::Value)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::FileNotFound {
                path: path.to_path_buf(),
            }
        } else {
            ConfigError::FileUnreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| ConfigError::FileSyntax {
                path: path.to_path_buf(),
                message: e.message().trim().replace('\n', "; ")
                    + &e.span().map_or(String::new(), |s| {
                        format!(" (line {})", line_of(&text, s.start))
                    }),
            })?;
    let mut values = Vec::new();
    for (key, value) in table {
        let Some(setting) = SETTINGS.iter().find(|s| s.key == key) else {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                suggestion: suggest(&key),
                key,
            });
        };
        values.push((setting.key, value));
    }
    Ok(values)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The known key closest to `key`, when close enough to be a typo.
fn suggest(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase().replace('-', "_");
    SETTINGS
        .iter()
        .map(|s| (edit_distance(&key, s.key), s.key))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
