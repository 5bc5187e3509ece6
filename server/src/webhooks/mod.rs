//! Outgoing webhooks of change data capture: Standard Webhooks signatures ([`sign`]) and the
//! addresses requests may go to ([`guard`]).

pub mod guard;
pub mod sign;
