//! The per-project event log: written in the same transaction as the change it records,
//! read back by ranges for catch-up. The log, not any transport, is the source of truth.

pub mod committed;
pub mod graphql;
pub mod log;
pub mod payload;
pub mod retention;
pub mod service;
pub mod txn;

pub use committed::CommittedEvent;
pub use payload::{EventPayload, UserSnapshot};
