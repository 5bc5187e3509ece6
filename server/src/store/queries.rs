//! The reads the DQL executor runs: compiled SELECTs (bound and run here, so that SQL stays in
//! the store), the targets of a mutation, and the collections that hold live documents.

use bigpeer_dql::sql::{Compiled, SqlParam};
use bigpeer_schema::{DocId, Value};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use super::{Store, StoreError};

/// The items of a SELECT.
#[derive(Debug, Clone, PartialEq)]
pub enum Items {
    /// Every item, in result order.
    Found(Vec<Value>),
    /// More than the cap asked for.
    TooMany,
    /// A computed item the server cannot represent (a number beyond the float range, nesting
    /// too deep to read back).
    Unrepresentable,
}

impl Store {
    /// The collections that hold a live document, by name.
    pub async fn live_collections(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT collection FROM documents WHERE NOT deleted ORDER BY collection",
        )
        .fetch_all(&self.reads())
        .await?)
    }

    /// Runs a compiled SELECT (every row one `jsonb` item) on a read connection, for at most
    /// `max_items` items. `whole_documents`: the items are stored documents as they are
    /// (`SELECT *`), so one that does not decode is an unreadable row, skipped (logged and
    /// counted); otherwise it is [`Items::Unrepresentable`].
    pub async fn select_items(
        &self,
        c: &Compiled,
        max_items: usize,
        whole_documents: bool,
    ) -> Result<Items, StoreError> {
        use futures_util::TryStreamExt as _;
        let reads = self.reads();
        let mut rows = bind(sqlx::query(compiled_sql(c)), &c.params).fetch(&reads);
        let mut items = Vec::new();
        while let Some(r) = rows.try_next().await? {
            if items.len() >= max_items {
                return Ok(Items::TooMany);
            }
            match r.try_get::<sqlx::types::Json<Value>, _>(0) {
                Ok(item) => items.push(item.0),
                Err(e @ sqlx::Error::ColumnDecode { .. }) if whole_documents => {
                    self.skipped_value("select", &e)
                }
                Err(e @ sqlx::Error::ColumnDecode { .. }) => {
                    tracing::debug!(error = ?e, "a result item does not decode");
                    return Ok(Items::Unrepresentable);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Items::Found(items))
    }

    /// The ids a compiled mutation target query finds in `collection` (a snapshot read; the
    /// write job locks and checks each again). A row whose id does not decode cannot be written:
    /// it is left out (logged and counted).
    pub async fn target_ids(
        &self,
        c: &Compiled,
        collection: &str,
    ) -> Result<Vec<DocId>, StoreError> {
        let rows = bind(sqlx::query(compiled_sql(c)), &c.params)
            .fetch_all(&self.reads())
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let key: Vec<u8> = r.try_get(0)?;
            match DocId::from_key(&key) {
                Ok(id) => ids.push(id),
                Err(e) => self.skipped_row("write", collection, &key, 0, &e),
            }
        }
        Ok(ids)
    }

    /// True once the store's pool is closed (the server shuts down).
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

/// Binds a compiled statement's parameters, in order.
/// The text of a compiled statement, for sqlx. `bigpeer_dql::sql` builds it from a checked plan
/// and constant SQL: every user value (literals, parameters, field names, the collection) is a
/// bind parameter `$n` (see [`bind`]), so no user text is spliced into it.
fn compiled_sql(c: &Compiled) -> sqlx::AssertSqlSafe<&str> {
    sqlx::AssertSqlSafe(c.sql.as_str())
}

fn bind<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    params: &'q [SqlParam],
) -> Query<'q, Postgres, PgArguments> {
    for p in params {
        q = match p {
            SqlParam::Text(s) => q.bind(s.as_str()),
            SqlParam::Jsonb(v) => q.bind(sqlx::types::Json(v)),
            SqlParam::Bytea(b) => q.bind(b.as_slice()),
            SqlParam::ByteaArray(a) => q.bind(a.as_slice()),
            SqlParam::Int8(i) => q.bind(*i),
        };
    }
    q
}
