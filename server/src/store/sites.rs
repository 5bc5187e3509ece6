//! Who owns each site id (`sql/0008_sync_sites.sql`): a site belongs to the first identity that
//! claims it, a peer identity or a bigpeer process, for good.

use bigpeer_schema::SiteId;

use super::{Store, StoreError};

/// The owner recorded for the sites of bigpeer processes.
pub const SERVER_SITE_OWNER: &str = "bigpeer";

impl Store {
    /// Claims `site` for `owner`: returns the site's owner, which is `owner` when the site was
    /// free or already `owner`'s. Safe against concurrent claims (one of them wins).
    pub async fn claim_site(&self, site: SiteId, owner: &str) -> Result<String, StoreError> {
        let owner: String = sqlx::query_scalar(
            "INSERT INTO sync_sites AS s (site, owner) VALUES ($1, $2) \
             ON CONFLICT (site) DO UPDATE SET last_seen = now() \
             RETURNING s.owner",
        )
        .bind(site.to_bytes().as_slice())
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(owner)
    }
}
