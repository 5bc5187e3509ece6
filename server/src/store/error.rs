//! Errors of the store.

use bigpeer_schema::SchemaError;

/// Errors raised while talking to Postgres or merging documents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres could not be reached or refused the connection.
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Any other database error. Its message says what kind of failure it was in our own
    /// words: the database's text (which can quote the statement, values or the schema) stays
    /// in the error for the logs (`{:?}`) and never reaches a client.
    #[error("{}", database_message(.0))]
    Database(#[from] sqlx::Error),
    /// A stored or received CRDT blob, id or value is invalid.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A DQL statement failed while it ran inside a write (an id conflict, a type error); the
    /// service layer turns it back into the DQL error.
    #[error("{}", .0.message)]
    Query(Box<bigpeer_dql::DqlError>),
    /// A write the caller is not permitted to make; nothing of the statement is written.
    #[error("{0}")]
    Denied(String),
    /// A write job touched a document it did not declare (a bug in the caller).
    #[error("document {id} in collection \"{collection}\" was not locked by this write")]
    NotLocked { collection: String, id: String },
    /// The error of a shared transaction, as seen by the other jobs in it (a copy of the first
    /// job's error: its kind, code and message; see [`StoreError::shared`]).
    #[error("{message}")]
    Shared {
        kind: Kind,
        code: &'static str,
        message: String,
    },
    /// The store is shutting down: no more writes are taken.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// A document carries the largest possible clock value.
    #[error("the document carries the largest possible clock value: it cannot be written any more (evict it and write it again)")]
    ClockExhausted,
    /// A bug in the server (an invariant that did not hold): logged, never shown to a client.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A delta could not be applied because the receiver lacks state it assumes.
    #[error("delta for {collection}/{id} is based on state this store does not have")]
    BaseNotDominated { collection: String, id: String },
}

/// What a store failure means for the caller, decided once per variant ([`StoreError::kind`]):
/// the HTTP edge maps it to a status, the sync session to a close or a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request's own input is at fault (invalid, over a limit, failing on its data): the same
    /// request fails again.
    Input,
    /// Outside the caller's permissions.
    Forbidden,
    /// The statement ran longer than the statement timeout.
    Timeout,
    /// Postgres is unreachable, overloaded or failing: retry with backoff.
    Unavailable,
    /// A bug or a broken installation: nothing the caller can fix.
    Internal,
}

impl StoreError {
    /// The copy of this error that the other jobs of a shared transaction get.
    pub fn shared(&self) -> StoreError {
        StoreError::Shared {
            kind: self.kind(),
            code: self.code(),
            message: self.to_string(),
        }
    }

    /// What this failure means for the caller. Exhaustive: a new variant must say.
    pub fn kind(&self) -> Kind {
        match self {
            StoreError::Connect(_) | StoreError::ShuttingDown => Kind::Unavailable,
            StoreError::Migrate(_) | StoreError::NotLocked { .. } | StoreError::Internal(_) => {
                Kind::Internal
            }
            StoreError::Database(e) => match database_failure(e) {
                DatabaseFailure::Timeout => Kind::Timeout,
                DatabaseFailure::Data => Kind::Input,
                DatabaseFailure::Unavailable | DatabaseFailure::Backend => Kind::Unavailable,
            },
            StoreError::Schema(_)
            | StoreError::Query(_)
            | StoreError::BaseNotDominated { .. }
            | StoreError::ClockExhausted => Kind::Input,
            StoreError::Denied(_) => Kind::Forbidden,
            StoreError::Shared { kind, .. } => *kind,
        }
    }

    /// A write refused for what it holds (over a limit of `bigpeer_schema::limits`): nothing of
    /// it was kept, and the caller's other writes are not affected.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::Schema(bigpeer_schema::SchemaError::Limit(_))
        )
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Connect(_) => "store/unavailable",
            StoreError::Migrate(_) => "store/migration",
            StoreError::Database(e) => match database_failure(e) {
                DatabaseFailure::Timeout => "store/timeout",
                DatabaseFailure::Data => "query/evaluation",
                DatabaseFailure::Unavailable => "store/unavailable",
                DatabaseFailure::Backend => "store/backend",
            },
            StoreError::Schema(e) => e.code(),
            StoreError::BaseNotDominated { .. } => "crdt/base-not-dominated",
            StoreError::NotLocked { .. } | StoreError::Internal(_) => "internal",
            StoreError::ShuttingDown => "store/unavailable",
            StoreError::ClockExhausted => "crdt/clock-exhausted",
            StoreError::Query(e) => e.code.as_str(),
            StoreError::Denied(_) => "auth/forbidden",
            StoreError::Shared { code, .. } => code,
        }
    }
}

/// The kinds of database failure.
enum DatabaseFailure {
    /// The statement timeout cancelled it (SQLSTATE 57014).
    Timeout,
    /// It failed on its data or size ([`is_data_error`]).
    Data,
    /// No connection became free in time.
    Unavailable,
    /// Anything else: the connection, the server, the schema.
    Backend,
}

fn database_failure(e: &sqlx::Error) -> DatabaseFailure {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(c) if c == "57014" => DatabaseFailure::Timeout,
            Some(c) if is_data_error(&c) => DatabaseFailure::Data,
            _ => DatabaseFailure::Backend,
        },
        sqlx::Error::PoolTimedOut => DatabaseFailure::Unavailable,
        _ => DatabaseFailure::Backend,
    }
}

/// Whether a SQLSTATE is caused by the statement's data or size rather than by the database:
/// class 22 (data exception: a number out of range, division by zero, invalid text, ...) and
/// class 54 (program limit exceeded: too many arguments or columns, nested too deeply, a value
/// too large). The same statement fails again on the same data: a 4xx, not a retry.
pub fn is_data_error(sqlstate: &str) -> bool {
    sqlstate.starts_with("22") || sqlstate.starts_with("54")
}

/// Our own words for a database failure (never the database's text).
fn database_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) if is_data_error(&code) => {
                format!(
                    "the statement failed on its data: {} (SQLSTATE {code})",
                    data_error_reason(&code)
                )
            }
            Some(code) => format!("the database failed the statement (SQLSTATE {code})"),
            None => "the database failed the statement".to_owned(),
        },
        sqlx::Error::PoolTimedOut => "no database connection became free in time".to_owned(),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            "the database connection pool is closed".to_owned()
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
            "the connection to the database failed".to_owned()
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            "a value read from the database cannot be represented".to_owned()
        }
        _ => "database error".to_owned(),
    }
}

/// What a class 22 or 54 SQLSTATE means, in words a client can act on.
fn data_error_reason(sqlstate: &str) -> &'static str {
    match sqlstate {
        "22003" => "a number is out of range",
        "22012" => "division by zero",
        "22001" => "a text value is too long",
        "22P02" | "22P05" | "22021" => "a value is not valid text for its type",
        "22019" | "22025" => "an invalid escape in a LIKE pattern",
        "2201W" | "2201X" => "LIMIT or OFFSET is out of range",
        "2202E" => "an array index is out of range",
        "22030" | "22032" | "22033" | "22034" | "22035" | "22036" | "22037" | "22038" | "22039"
        | "2203A" | "2203B" | "2203C" | "2203D" | "2203E" | "2203F" => {
            "a JSON value is not valid for the operation"
        }
        "54001" => "the statement is nested too deeply",
        "54011" => "the statement has too many columns or sort keys",
        "54023" => "a function has too many arguments",
        c if c.starts_with("54") => "the statement or a value exceeds a limit of the database",
        _ => "a value is not valid for the operation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_our_words_and_query_evaluation() {
        assert!(is_data_error("22003"));
        assert!(is_data_error("2201W"));
        assert!(is_data_error("54023"));
        assert!(!is_data_error("57014"));
        assert!(!is_data_error("08006"));
        assert_eq!(
            data_error_reason("54023"),
            "a function has too many arguments"
        );
        assert_eq!(
            data_error_reason("22999"),
            "a value is not valid for the operation"
        );
        let e = StoreError::Database(sqlx::Error::Protocol("raw text from the server".into()));
        assert_eq!(e.to_string(), "the connection to the database failed");
        assert_eq!(e.code(), "store/backend");
        let e = StoreError::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(e.code(), "store/unavailable");
    }

    /// Real Postgres failures: a failure on the statement's data is a 400 `query/evaluation`,
    /// anything else a `store/backend`, and neither message holds the database's text.
    #[tokio::test]
    async fn postgres_failures_are_classified_in_our_words() {
        let db = crate::testdb::TestDb::new().await;
        let args = (0..101)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let too_many = format!("SELECT jsonb_build_array({args})");
        for (sql, sqlstate, database_words) in [
            ("SELECT 1 / 0", "22012", "returned from database"),
            ("SELECT 1e308::float8 * 10", "22003", "value out of range"),
            (
                "SELECT 'xy' LIKE 'x!' ESCAPE '!'",
                "22025",
                "must not end with escape",
            ),
            ("SELECT 'a'::int", "22P02", "invalid input syntax"),
            ("SELECT 1 LIMIT -1", "2201W", "LIMIT must not be negative"),
            (too_many.as_str(), "54023", "cannot pass more than"),
        ] {
            let e = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_one(db.store.pool())
                .await
                .map(|_| ())
                .expect_err(sql);
            let e = StoreError::from(e);
            assert_eq!(e.code(), "query/evaluation", "{sql}");
            let message = e.to_string();
            assert!(message.contains(sqlstate), "{sql}: {message}");
            assert!(!message.contains(database_words), "{sql}: {message}");
            assert_eq!(e.kind(), Kind::Input, "{sql}");
        }
        let e = sqlx::query("SELECT * FROM no_such_table_here")
            .fetch_one(db.store.pool())
            .await
            .map(|_| ())
            .expect_err("no such table");
        let e = StoreError::from(e);
        assert_eq!(e.code(), "store/backend");
        assert_eq!(
            e.to_string(),
            "the database failed the statement (SQLSTATE 42P01)"
        );
        let e = crate::auth::AuthError::from(StoreError::from(
            sqlx::query("SELECT * FROM no_such_table_here")
                .fetch_one(db.store.pool())
                .await
                .map(|_| ())
                .expect_err("no such table"),
        ));
        assert!(!e.to_string().contains("no_such_table_here"), "{e}");
    }
}
