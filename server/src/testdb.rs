//! A fresh, migrated Postgres database per test (unit tests of this crate).
//!
//! The server is the one of `BIGPEER_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), as for every test of the workspace.

use sqlx::{Connection, PgConnection};

use crate::store::{Store, StoreOptions};

/// The URL of database `name` on the test server.
pub fn database_url(name: &str) -> String {
    let url = std::env::var("BIGPEER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    with_database(&url, name)
}

/// `url` with its database replaced by (or set to) `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (url.to_owned(), String::new()),
    };
    // `scheme://authority[/database]`: replace (or add) the database.
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base.as_str(),
    };
    format!("{server}/{name}{query}")
}

/// A fresh, migrated database; dropped when the value is, even when the test fails (and by
/// [`TestDb::drop_db`], which closes the store first).
pub struct TestDb {
    pub name: String,
    pub store: Store,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("bigpeer_unit_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&database_url("postgres"))
            .await
            .expect("a Postgres server for tests (set BIGPEER_TEST_DATABASE_URL)");
        // `name` is made here from hex digits.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let store = Store::connect(&database_url(&name), &StoreOptions::default())
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        TestDb { name, store }
    }

    pub fn url(&self) -> String {
        database_url(&self.name)
    }

    pub async fn drop_db(self) {
        self.store.close().await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A test's runtime cannot be blocked on from within: the database is dropped from a
        // thread with a runtime of its own. `WITH (FORCE)` ends the connections still open.
        let name = self.name.clone();
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(async {
                    let mut admin = PgConnection::connect(&database_url("postgres")).await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await?;
                    admin.close().await
                })
                .map_err(|e| e.to_string())
        })
        .join();
        if let Ok(Err(e)) = outcome {
            eprintln!("warning: test database {} was not dropped: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_or_added() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
