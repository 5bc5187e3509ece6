//! Outgoing webhooks of change data capture: registrations ([`registry`]), delivery
//! ([`deliver`]), Standard Webhooks signatures ([`sign`]) and the addresses requests may go to
//! ([`guard`]).

pub mod deliver;
pub mod guard;
pub mod registry;
pub mod sign;

pub use deliver::{Deliverer, DeliveryOptions, DeliveryStats};
pub use registry::{NewWebhook, Registry, Replay, WebhookError};
