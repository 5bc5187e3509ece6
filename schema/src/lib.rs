//! bigpeer's document model. Pure: no IO, no async.
//!
//! - [`value`]: JSON values with Ditto's number model (integers and floats distinct, u64, binary).
//! - [`id`]: document ids, their validation and their order-preserving storage key.
//! - [`hlc`]: hybrid logical clocks, site ids, stamps.
//! - [`crdt`]: the document CRDT (registers, add-wins maps, counters, attachment tokens,
//!   tombstones), its write operations, deltas, merge and binary encoding.
//! - [`limits`]: the one validator of depths, sizes and names every write path uses.
//! - [`wire`]: the sync protocol messages and their binary encoding.

pub mod codec;
pub mod crdt;
pub mod error;
pub mod hlc;
pub mod id;
pub mod limits;
pub mod value;
pub mod wire;

pub use crdt::{
    Component, CounterKind, Delta, Doc, FieldView, ObjectMode, Op, ProvenanceError, TypeView,
    VersionVector,
};
pub use error::{Result, SchemaError};
pub use hlc::{Clock, Hlc, SiteId, Stamp};
pub use id::DocId;
pub use limits::LimitError;
pub use value::Value;
