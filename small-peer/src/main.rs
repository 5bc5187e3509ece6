//! `smallpeer`: a small peer on the command line.
//!
//! ```text
//! smallpeer --data DIR [--connect URL] [--token T] exec "<DQL>" [--args JSON]
//! smallpeer --data DIR --connect URL [--token T] watch "<DQL>" [--args JSON]
//! smallpeer --data DIR --connect URL [--token T] sync --subscribe "<DQL>" ...
//! ```
//!
//! `exec` prints `{"items": [...], "mutatedDocumentIds": [...]}` on stdout. Errors are printed
//! on stderr as `{"code": ..., "message": ...}`; the exit code is 2 for a bad statement, bad
//! arguments or a feature that is not available, 1 for a storage failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use smallpeer::{PeerError, Store};

#[derive(Debug, Parser)]
#[command(
    name = "smallpeer",
    version,
    about = "A bigpeer small peer: local DQL over an embedded store"
)]
struct Cli {
    /// Directory holding the peer's database (created when missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The big peer to sync with (ws:// or wss:// URL of its sync endpoint).
    #[arg(long, value_name = "URL", global = true)]
    connect: Option<String>,
    /// Credentials for the big peer (an API key or a token of its auth webhook).
    #[arg(long, value_name = "T", global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one DQL statement on the local store and prints its result as JSON.
    Exec {
        /// The DQL statement.
        statement: String,
        /// The statement's arguments as a JSON object.
        #[arg(long, value_name = "JSON")]
        args: Option<String>,
    },
    /// Prints a query's result, then again each time it changes (needs the sync client).
    Watch {
        /// The DQL SELECT statement.
        statement: String,
        /// The statement's arguments as a JSON object.
        #[arg(long, value_name = "JSON")]
        args: Option<String>,
    },
    /// Syncs with the big peer given by --connect (needs the sync client).
    Sync {
        /// A DQL SELECT saying which documents to sync (repeatable).
        #[arg(long, value_name = "DQL")]
        subscribe: Vec<String>,
    },
}

/// An error as the CLI reports it.
struct Failure {
    code: &'static str,
    message: String,
    exit: u8,
}

impl From<PeerError> for Failure {
    fn from(e: PeerError) -> Failure {
        let message = match &e {
            PeerError::Dql(d) => d.message.clone(),
            other => other.to_string(),
        };
        Failure {
            code: e.code(),
            exit: if e.is_user_error() { 2 } else { 1 },
            message,
        }
    }
}

fn sync_unavailable() -> Failure {
    Failure {
        code: "sync/unavailable",
        message: "sync is not available yet".to_owned(),
        exit: 2,
    }
}

fn exec(data: &PathBuf, statement: &str, args: Option<&str>) -> Result<serde_json::Value, Failure> {
    let args = match args {
        None => serde_json::Value::Null,
        Some(text) => serde_json::from_str(text).map_err(|e| {
            Failure::from(PeerError::Args(format!("--args is not valid JSON: {e}")))
        })?,
    };
    let args = smallpeer::args_from_json(&args)?;
    let mut store = Store::open_dir(data)?;
    let r = store.execute(statement, &args)?;
    Ok(serde_json::json!({
        "items": r.items,
        "mutatedDocumentIds": r.mutated_ids,
    }))
}

fn run(cli: Cli) -> Result<serde_json::Value, Failure> {
    match cli.command {
        Command::Exec { statement, args } => {
            if cli.connect.is_some() {
                return Err(sync_unavailable());
            }
            exec(&cli.data, &statement, args.as_deref())
        }
        Command::Watch { .. } | Command::Sync { .. } => Err(sync_unavailable()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!(
                "{}",
                serde_json::json!({"code": f.code, "message": f.message})
            );
            ExitCode::from(f.exit)
        }
    }
}
