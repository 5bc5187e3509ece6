//! A fresh, migrated Postgres database per test (unit tests of this crate).
//!
//! The server is `BIGPEER_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`).

use sqlx::{Connection, PgConnection};

use crate::store::{Store, StoreOptions};

pub fn server_url() -> String {
    std::env::var("BIGPEER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A fresh, migrated database; dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub store: Store,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("bigpeer_unit_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&format!("{}/postgres", server_url()))
            .await
            .expect("a Postgres server for tests (set BIGPEER_TEST_PG)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        let store = Store::connect(
            &format!("{}/{name}", server_url()),
            &StoreOptions::default(),
        )
        .await
        .expect("connect");
        store.migrate().await.expect("migrate");
        TestDb { name, store }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", server_url(), self.name)
    }

    pub async fn drop_db(self) {
        self.store.close().await;
        let mut admin = PgConnection::connect(&format!("{}/postgres", server_url()))
            .await
            .expect("connect");
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .expect("drop database");
    }
}
