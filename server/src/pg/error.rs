//! Errors of the embedded Postgres.

use std::path::PathBuf;

use super::binaries::PgBinaries;

/// What can go wrong while running bigpeer's own Postgres cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) were found on this machine; \
         without a database URL bigpeer runs its own Postgres from them"
    )]
    BinariesNotFound,
    #[error("no PostgreSQL server binaries (initdb, pg_ctl, postgres) in \"{}\"", dir.display())]
    BinariesNotIn { dir: PathBuf },
    #[error(
        "the cluster in the data folder was made by PostgreSQL {cluster}, but {}",
        found_list(found)
    )]
    VersionMismatch {
        cluster: u32,
        found: Vec<PgBinaries>,
    },
    #[error("cannot prepare \"{}\": {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the data folder \"{}\" is in use by another bigpeer process", path.display())]
    DataDirInUse { path: PathBuf },
    #[error("the bigpeer server using the data folder \"{}\" has not started its Postgres yet (or is stopping)", path.display())]
    ServerStarting { path: PathBuf },
    #[error("Postgres refuses to run as root and there is no \"postgres\" user to run it as")]
    NoPostgresUser,
    #[error("the \"{user}\" user cannot reach \"{}\"", path.display())]
    NotReachable { user: String, path: PathBuf },
    #[error("\"{}\" is not empty and holds no Postgres cluster", path.display())]
    NotACluster { path: PathBuf },
    #[error("the Postgres socket path \"{}\" is {len} bytes long, more than the {max} a Unix socket allows", path.display())]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("cannot run \"{}\": {source}", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("initdb failed: {output}")]
    Initdb { output: String },
    #[error("the embedded Postgres did not start: {output}")]
    Start { output: String, log: PathBuf },
    #[error("an earlier Postgres is still running on the cluster (pid {pid}) and would not stop: {output}")]
    Leftover { pid: i32, output: String },
    #[error("the embedded Postgres did not stop: {output}")]
    Stop { output: String },
    #[error("cannot create the \"bigpeer\" database: {output}")]
    CreateDatabase { output: String },
}

fn found_list(found: &[PgBinaries]) -> String {
    if found.is_empty() {
        return "no PostgreSQL is installed".to_string();
    }
    let list: Vec<String> = found
        .iter()
        .map(|f| format!("{} in \"{}\"", f.version, f.dir.display()))
        .collect();
    format!("only these versions are installed: {}", list.join(", "))
}

impl PgError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PgError::BinariesNotFound | PgError::BinariesNotIn { .. } => "pg/binaries-not-found",
            PgError::VersionMismatch { .. } => "pg/version-mismatch",
            PgError::DataDir { .. } => "pg/data-dir",
            PgError::DataDirInUse { .. } => "pg/data-dir-in-use",
            PgError::ServerStarting { .. } => "pg/server-starting",
            PgError::NoPostgresUser => "pg/no-postgres-user",
            PgError::NotReachable { .. } => "pg/data-dir-not-reachable",
            PgError::NotACluster { .. } => "pg/not-a-cluster",
            PgError::SocketPathTooLong { .. } => "pg/socket-path-too-long",
            PgError::Spawn { .. } => "pg/spawn",
            PgError::Initdb { .. } => "pg/initdb",
            PgError::Start { .. } => "pg/start",
            PgError::Leftover { .. } => "pg/leftover-server",
            PgError::Stop { .. } => "pg/stop",
            PgError::CreateDatabase { .. } => "pg/create-database",
        }
    }

    /// How to fix it.
    pub fn hint(&self) -> Option<String> {
        let install = "install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; \
                       Fedora/RHEL: `dnf install postgresql-server`; macOS: `brew install postgresql@15`)";
        let external =
            "or use an existing server: set DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/DBNAME";
        Some(match self {
            PgError::BinariesNotFound => format!(
                "{install}, or point --postgres-bin-dir (BIGPEER_POSTGRES_BIN_DIR) at the folder \
                 holding initdb and pg_ctl, {external}"
            ),
            PgError::BinariesNotIn { .. } => format!(
                "give the folder that holds initdb and pg_ctl (`pg_config --bindir` prints it), \
                 or leave --postgres-bin-dir unset to search the usual places; {external}"
            ),
            PgError::VersionMismatch { cluster, .. } => format!(
                "install PostgreSQL {cluster} beside the newer version, or start with a new --data-dir \
                 (the cluster's data cannot be read by another major version without pg_upgrade)"
            ),
            PgError::DataDir { .. } => {
                "choose a --data-dir that this user can create and write".to_string()
            }
            PgError::DataDirInUse { .. } => {
                "stop the other bigpeer process, or give this one its own --data-dir".to_string()
            }
            PgError::ServerStarting { .. } => {
                "try again once the server answers GET /readyz".to_string()
            }
            PgError::NoPostgresUser => format!(
                "run bigpeer as an ordinary user, create a system user named \"postgres\" \
                 (`useradd --system postgres`), {external}"
            ),
            PgError::NotReachable { user, .. } => format!(
                "choose a --data-dir outside private folders such as /root (for example /var/lib/bigpeer), \
                 or let \"{user}\" traverse every parent folder"
            ),
            PgError::NotACluster { .. } => {
                "move the files away, or choose another --data-dir".to_string()
            }
            PgError::SocketPathTooLong { .. } => "choose a shorter --data-dir".to_string(),
            PgError::Spawn { .. } => {
                "check that the Postgres installation is complete and executable".to_string()
            }
            PgError::Initdb { .. } => {
                "read initdb's message above; removing the half-made cluster folder lets bigpeer try again"
                    .to_string()
            }
            PgError::Start { log, .. } => {
                format!("the server log is in \"{}\"", log.display())
            }
            PgError::Leftover { pid, .. } => {
                format!("stop process {pid} yourself (`kill {pid}`), then start bigpeer again")
            }
            PgError::Stop { .. } => return None,
            PgError::CreateDatabase { .. } => {
                "read the message above; the Postgres server log is in the data folder".to_string()
            }
        })
    }
}
