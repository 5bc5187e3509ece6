//! Connecting to Postgres: checking a URL, and saying precisely why a connection failed.

use std::time::Duration;

use super::StoreError;

/// Why connecting failed, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectDiagnosis {
    /// `host:port`, or the Unix socket.
    pub target: String,
    pub detail: String,
    pub hint: String,
}

/// Checks that `url` is a Postgres URL the driver takes; the driver's complaint otherwise.
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<sqlx::postgres::PgConnectOptions>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What went wrong connecting to `url`, as precisely as `source` allows; `None` when the URL
/// itself does not parse. The pool retries refused connections until its timeout and then only
/// says that it timed out, so a direct TCP probe tells the user whether anything listens there
/// at all.
pub async fn diagnose_connect(
    url: &str,
    source: &StoreError,
    waited: Duration,
) -> Option<ConnectDiagnosis> {
    let Ok(opts) = url.parse::<sqlx::postgres::PgConnectOptions>() else {
        return None;
    };
    let (host, port) = (opts.get_host().to_string(), opts.get_port());
    let target = match opts.get_socket() {
        Some(dir) => format!("the Unix socket in \"{}\"", dir.display()),
        None => format!("{host}:{port}"),
    };
    let user = opts.get_username().to_string();
    let database = opts.get_database().unwrap_or(&user).to_string();
    let check =
        "check that Postgres runs there and that DATABASE_URL names the right host and port, \
                 or unset DATABASE_URL to run the embedded Postgres";

    let (detail, hint) = match source {
        StoreError::Connect(sqlx::Error::Database(db))
        | StoreError::Database(sqlx::Error::Database(db)) => {
            let hint = match db.code().as_deref() {
                Some("3D000") => format!(
                    "create the database (`createdb -h {host} -p {port} {database}`) or fix its name in DATABASE_URL"
                ),
                Some("28P01") | Some("28000") => {
                    format!("check the user (\"{user}\") and password in DATABASE_URL")
                }
                _ => "check DATABASE_URL and the Postgres server log".to_string(),
            };
            (db.message().to_string(), hint)
        }
        StoreError::Connect(sqlx::Error::PoolTimedOut) if opts.get_socket().is_none() => {
            let probe = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await;
            let detail = match probe {
                Ok(Ok(_)) => format!(
                    "the port accepts connections but Postgres did not answer within {}s",
                    waited.as_secs_f32()
                ),
                Ok(Err(e)) => lowercase_first(&e.to_string()),
                Err(_) => {
                    "no answer (the host may be down or a firewall may drop packets)".to_string()
                }
            };
            (detail, check.to_string())
        }
        StoreError::Connect(sqlx::Error::Io(e)) => {
            (lowercase_first(&e.to_string()), check.to_string())
        }
        other => (other.to_string(), check.to_string()),
    };
    Some(ConnectDiagnosis {
        target,
        detail,
        hint,
    })
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
