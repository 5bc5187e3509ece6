//! Outgoing webhooks of change data capture: registrations ([`registry`]), Standard Webhooks
//! signatures ([`sign`]) and the addresses requests may go to ([`guard`]).

pub mod guard;
pub mod registry;
pub mod sign;

pub use registry::{NewWebhook, Registry, WebhookError};
