//! The system parameters `ALTER SYSTEM` sets, kept in `system_settings`
//! (`sql/0006_system_settings.sql`): they survive restarts and are shared by every process on
//! the database.

use std::collections::BTreeMap;

use bigpeer_schema::Value;

use super::{Store, StoreError};

impl Store {
    /// The parameters set away from their defaults, by (lower-case) name.
    pub async fn system_settings(&self) -> Result<BTreeMap<String, Value>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, value::text FROM system_settings")
                .fetch_all(&self.pool)
                .await?;
        // jsonb prints valid JSON; a value that still does not parse is left out (the
        // parameter keeps its default) rather than stopping the server.
        Ok(rows
            .into_iter()
            .filter_map(|(name, text)| Some((name, Value::parse_json(&text).ok()?)))
            .collect())
    }

    /// Keeps one parameter: `Some(value)` sets it, `None` resets it to its default.
    pub async fn set_system_setting(
        &self,
        name: &str,
        value: Option<&Value>,
    ) -> Result<(), StoreError> {
        match value {
            Some(v) => {
                sqlx::query(
                    "INSERT INTO system_settings (name, value) VALUES ($1, $2::text::jsonb) \
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                )
                .bind(name)
                .bind(v.to_json_string())
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM system_settings WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// `ALTER SYSTEM RESET ALL`: every parameter back to its default.
    pub async fn reset_system_settings(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM system_settings")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
