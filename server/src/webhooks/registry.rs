//! Webhook registrations: checked, given an id and a secret, and stored.

use std::collections::BTreeMap;

use bigpeer_dql::plan::{self, PExpr};

use super::guard::{check_url, TargetError};
use super::sign::Secret;
use crate::store::{DeliveryRow, NewWebhookRow, Store, StoreError, WebhookPatch, WebhookRow};

/// Most collections one webhook may name.
pub const MAX_COLLECTIONS: usize = 100;
/// Longest URL, filter or description, in bytes.
pub const MAX_TEXT: usize = 4096;

/// What can go wrong managing webhooks.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A field that is not valid; says which and why.
    #[error("{0}")]
    Invalid(String),
    /// The URL is refused.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// No webhook has this id.
    #[error("there is no webhook {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WebhookError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::Invalid(_) => "webhooks/invalid",
            WebhookError::Target(_) => "webhooks/invalid-url",
            WebhookError::NotFound(_) => "webhooks/not-found",
            WebhookError::Store(e) => e.code(),
        }
    }
}

/// A webhook to create.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    pub url: String,
    /// `None`: every collection.
    pub collections: Option<Vec<String>>,
    /// A DQL expression over the new (or, for a removal, the old) document.
    pub filter: Option<String>,
    pub description: String,
}

/// Compiles a webhook's filter: a DQL expression, checked as a condition on a whole document.
pub fn compile_filter(text: &str) -> Result<PExpr, WebhookError> {
    let bad = |e: bigpeer_dql::DqlError| {
        WebhookError::Invalid(format!(
            "filter {text:?} is not a valid DQL expression: {}",
            e.message
        ))
    };
    let expr = bigpeer_dql::parser::parse_expression(text).map_err(bad)?;
    plan::check_condition(&expr, &BTreeMap::new()).map_err(bad)
}

fn check_text(what: &str, text: &str) -> Result<(), WebhookError> {
    if text.len() > MAX_TEXT {
        return Err(WebhookError::Invalid(format!(
            "{what} is longer than {MAX_TEXT} bytes"
        )));
    }
    if text.contains('\0') {
        return Err(WebhookError::Invalid(format!("{what} holds U+0000")));
    }
    Ok(())
}

fn check_collections(collections: &[String]) -> Result<(), WebhookError> {
    if collections.is_empty() {
        return Err(WebhookError::Invalid(
            "collections is empty: leave it out (or null) for every collection".into(),
        ));
    }
    if collections.len() > MAX_COLLECTIONS {
        return Err(WebhookError::Invalid(format!(
            "collections names more than {MAX_COLLECTIONS} collections"
        )));
    }
    for c in collections {
        bigpeer_schema::limits::check_collection(c)
            .map_err(|e| WebhookError::Invalid(format!("collections: {e}")))?;
    }
    Ok(())
}

fn check_url_text(url: &str, allow_private: bool) -> Result<(), WebhookError> {
    check_text("url", url)?;
    check_url(url, allow_private)?;
    Ok(())
}

/// Creates, lists, changes and deletes webhooks.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
    allow_private: bool,
}

impl Registry {
    /// `allow_private`: the `webhook_allow_private` setting.
    pub fn new(store: Store, allow_private: bool) -> Registry {
        Registry {
            store,
            allow_private,
        }
    }

    /// Checks and stores a webhook; it gets the changes committed from now on. Its secret is in
    /// the answer.
    pub async fn create(&self, new: NewWebhook) -> Result<WebhookRow, WebhookError> {
        check_url_text(&new.url, self.allow_private)?;
        if let Some(c) = &new.collections {
            check_collections(c)?;
        }
        if let Some(f) = &new.filter {
            check_text("filter", f)?;
            compile_filter(f)?;
        }
        check_text("description", &new.description)?;
        let id = format!("wh_{:016x}", rand::random::<u64>());
        let secret = Secret::generate().encode();
        Ok(self
            .store
            .insert_webhook(NewWebhookRow {
                id: &id,
                url: &new.url,
                collections: new.collections.as_deref(),
                filter: new.filter.as_deref(),
                description: &new.description,
                secret: &secret,
            })
            .await?)
    }

    /// Every webhook, oldest first.
    pub async fn list(&self) -> Result<Vec<WebhookRow>, WebhookError> {
        Ok(self.store.list_webhooks().await?)
    }

    /// One webhook.
    pub async fn get(&self, id: &str) -> Result<WebhookRow, WebhookError> {
        self.store
            .webhook(id)
            .await?
            .ok_or_else(|| WebhookError::NotFound(id.to_owned()))
    }

    /// Changes a webhook.
    pub async fn update(&self, id: &str, patch: WebhookPatch) -> Result<WebhookRow, WebhookError> {
        if let Some(url) = &patch.url {
            check_url_text(url, self.allow_private)?;
        }
        if let Some(Some(c)) = &patch.collections {
            check_collections(c)?;
        }
        if let Some(Some(f)) = &patch.filter {
            check_text("filter", f)?;
            compile_filter(f)?;
        }
        if let Some(d) = &patch.description {
            check_text("description", d)?;
        }
        self.store
            .update_webhook(id, &patch)
            .await?
            .ok_or_else(|| WebhookError::NotFound(id.to_owned()))
    }

    /// Deletes a webhook and its deliveries.
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        if self.store.delete_webhook(id).await? {
            Ok(())
        } else {
            Err(WebhookError::NotFound(id.to_owned()))
        }
    }

    /// A webhook's deliveries, newest first (at most 100); of one status when given
    /// (`pending`, `failed`, `delivered` or `dead`).
    pub async fn deliveries(
        &self,
        id: &str,
        status: Option<&str>,
    ) -> Result<Vec<DeliveryRow>, WebhookError> {
        if let Some(s) = status {
            if !matches!(s, "pending" | "failed" | "delivered" | "dead") {
                return Err(WebhookError::Invalid(format!(
                    "status {s:?} is not one of pending, failed, delivered, dead"
                )));
            }
        }
        self.get(id).await?;
        Ok(self.store.webhook_deliveries(id, status, 100).await?)
    }

    /// Sends changes again: every change after `since` (the position goes back to it), or the
    /// given deliveries (the same bodies under the same ids). Returns how many deliveries were
    /// found (for `since`: 0).
    pub async fn replay(&self, id: &str, replay: Replay) -> Result<u64, WebhookError> {
        match replay {
            Replay::Since(since) => {
                if since < 0 {
                    return Err(WebhookError::Invalid("since must be 0 or more".into()));
                }
                if self.store.replay_webhook_since(id, since).await? {
                    Ok(0)
                } else {
                    Err(WebhookError::NotFound(id.to_owned()))
                }
            }
            Replay::Deliveries(ids) => {
                if ids.is_empty() || ids.len() > 1000 {
                    return Err(WebhookError::Invalid(
                        "deliveries must name 1 to 1000 delivery ids".into(),
                    ));
                }
                self.get(id).await?;
                Ok(self.store.replay_deliveries(id, &ids).await?)
            }
        }
    }
}

/// What to send again.
#[derive(Debug, Clone)]
pub enum Replay {
    /// Every change after this position.
    Since(i64),
    /// These deliveries (`msg_...`).
    Deliveries(Vec<String>),
}
