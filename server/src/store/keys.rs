//! API keys as stored (`sql/0003_api_keys.sql`): the queries behind `auth::KeyStore`, which
//! keeps the cache, the secrets' hashing and the revocation watch.

use sqlx::Row;

use super::{Store, StoreError};

/// One stored key, without its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub prefix: String,
    /// The permission set as stored (JSON).
    pub permissions: serde_json::Value,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key to store.
#[derive(Debug, Clone, Copy)]
pub struct NewKeyRow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub secret_hash: &'a [u8],
    pub prefix: &'a str,
    pub permissions: &'a serde_json::Value,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

const SELECT_KEY: &str = "SELECT id, name, description, prefix, permissions, \
     extract(epoch FROM created_at)::int8, extract(epoch FROM expires_at)::int8, \
     extract(epoch FROM revoked_at)::int8 FROM api_keys";

fn key_row(r: &sqlx::postgres::PgRow) -> Result<KeyRow, StoreError> {
    let perms: sqlx::types::Json<serde_json::Value> = r.try_get(4)?;
    Ok(KeyRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        description: r.try_get(2)?,
        prefix: r.try_get(3)?,
        permissions: perms.0,
        created_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        revoked_at: r.try_get(7)?,
    })
}

impl Store {
    /// Stores a new key; its creation time (unix seconds).
    pub async fn insert_key(&self, key: NewKeyRow<'_>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO api_keys (id, name, description, secret_hash, prefix, permissions, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7)) \
             RETURNING extract(epoch FROM created_at)::int8",
        )
        .bind(key.id)
        .bind(key.name)
        .bind(key.description)
        .bind(key.secret_hash)
        .bind(key.prefix)
        .bind(sqlx::types::Json(key.permissions))
        .bind(key.expires_at.map(|t| t as f64))
        .fetch_one(&self.pool)
        .await?)
    }

    /// Every key, newest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        // Constant text: `SELECT_KEY` and a fixed order.
        let sql = format!("{SELECT_KEY} ORDER BY created_at DESC, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_row).collect()
    }

    /// Marks a key revoked (the first revocation's time stays); its secret's hash, or `None`
    /// when there is no such key.
    pub async fn revoke_key(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING secret_hash",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The key whose secret hashes to `secret_hash` (retried once on a fresh connection when
    /// the first one turns out to be lost).
    pub async fn key_by_hash(&self, secret_hash: &[u8]) -> Result<Option<KeyRow>, StoreError> {
        let sql = format!("{SELECT_KEY} WHERE secret_hash = $1");
        let row = self
            .retry_read(|| async {
                // Constant text; the hash is a bound parameter.
                Ok(sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(secret_hash)
                    .fetch_optional(&self.pool)
                    .await?)
            })
            .await?;
        row.as_ref().map(key_row).transpose()
    }

    /// The database's clock, in unix seconds.
    pub async fn database_now(&self) -> Result<f64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT extract(epoch FROM now())::float8")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The keys revoked at or after `since` (unix seconds): id and secret hash.
    pub async fn keys_revoked_since(
        &self,
        since: f64,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, secret_hash FROM api_keys WHERE revoked_at >= to_timestamp($1)",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }
}
