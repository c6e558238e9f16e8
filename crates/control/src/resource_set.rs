//! The resources in force, as one immutable, versioned set.
//!
//! The store publishes a new `ResourceSet` after every committed change (through a
//! `tokio::sync::watch` channel); the discovery server compiles proxy configs from the
//! latest one. Sharing an `Arc` means readers never hold a lock across an await.

use weft_model::Resource;

#[derive(Clone, Debug, Default)]
pub struct ResourceSet {
    /// Increases with every committed change; 0 for an empty, never-written store.
    pub revision: u64,
    pub resources: Vec<Resource>,
}
