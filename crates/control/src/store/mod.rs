//! The resource store: what users applied, durably, with a version per resource.
//!
//! [`Store`] is the small interface the rest of the control plane uses, so a replicated
//! backend (etcd) can stand in for the embedded one ([`RedbStore`]). The rules every
//! backend follows live in `plan`: a batch is checked as a whole (stale versions, then
//! [`weft_model::validate`] over the set it would leave) and then committed in one
//! transaction, or not at all.

mod document;
mod plan;
mod redb_store;

#[cfg(test)]
pub(crate) mod tests;

pub use document::{parse_documents, ApplyItem};
pub use redb_store::RedbStore;

use crate::audit::AuditRecord;

/// Builds an audit record from the log's head `(seq, hash)`.
/// `None` writes nothing.
pub type MakeAuditRecord = Box<dyn FnOnce((u64, &str)) -> Option<AuditRecord> + Send>;
use crate::resource_set::ResourceSet;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use weft_model::resources::Kind;
use weft_model::{Diagnostic, Resource, Warning};

/// The actor of what the control plane does by itself.
pub const CONTROL_PLANE: &str = "control plane";

/// What a store operation returns. Boxed so `Store` can be used as `Arc<dyn Store>`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The resources in force, durably. Every write is atomic: it commits whole or not at all,
/// and once its future resolves `Ok` it survives a crash.
pub trait Store: Send + Sync {
    /// Creates or replaces every resource in `batch` at once. Items that carry an expected
    /// `resourceVersion` must still be at it, or nothing is applied
    /// ([`StoreError::Conflict`]). Items identical to what is stored are `Unchanged` and
    /// keep their version. Each change is written to the audit log, as done by `actor`, in
    /// the same transaction.
    fn apply_as(&self, batch: Vec<ApplyItem>, actor: String) -> StoreFuture<'_, Applied>;

    /// What [`Store::apply_as`] would do with `batch`, checked the same way, storing nothing
    /// (`weft apply --dry-run`).
    fn plan_apply(&self, batch: Vec<ApplyItem>) -> StoreFuture<'_, Applied>;

    /// [`Store::apply_as`] by the control plane itself.
    fn apply(&self, batch: Vec<ApplyItem>) -> StoreFuture<'_, Applied> {
        self.apply_as(batch, CONTROL_PLANE.to_owned())
    }

    /// Removes one resource; with `expected_version`, only if it is still at that version.
    /// Audited as done by `actor`.
    fn delete_as(
        &self,
        key: ResourceKey,
        expected_version: Option<u64>,
        actor: String,
    ) -> StoreFuture<'_, Deleted>;

    /// [`Store::delete_as`] by the control plane itself.
    fn delete(&self, key: ResourceKey, expected_version: Option<u64>) -> StoreFuture<'_, Deleted> {
        self.delete_as(key, expected_version, CONTROL_PLANE.to_owned())
    }

    /// Appends one entry to the audit log, durably.
    fn audit(&self, record: AuditRecord) -> StoreFuture<'_, ()> {
        self.audit_after_head(Box::new(move |_| Some(record)))
    }

    /// Appends the entry `make` builds from the log's head `(seq, hash)` at that moment,
    /// with no other entry between (nothing if it builds none): how a checkpoint signs the
    /// entry it follows.
    fn audit_after_head(&self, make: MakeAuditRecord) -> StoreFuture<'_, ()>;

    /// Audit log rows `(seq, body, hash)` from `from` (1 is the first), at most `limit`.
    fn audit_rows(&self, from: u64, limit: usize) -> StoreFuture<'_, Vec<(u64, String, String)>>;

    fn get(&self, key: ResourceKey) -> StoreFuture<'_, Option<StoredResource>>;

    /// Every resource, or every resource of one kind, ordered by kind, namespace and name.
    fn list(&self, kind: Option<Kind>) -> StoreFuture<'_, Vec<StoredResource>>;

    /// The committed set, now and after every change (its revision is the store's).
    fn subscribe(&self) -> watch::Receiver<Arc<ResourceSet>>;

    /// A small value kept for another subsystem (the CA root, for instance).
    fn get_meta(&self, key: String) -> StoreFuture<'_, Option<Vec<u8>>>;

    /// Writes a `meta` value durably. Resource revisions do not move.
    fn put_meta(&self, key: String, value: Vec<u8>) -> StoreFuture<'_, ()>;
}

/// Which resource: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ResourceKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ResourceKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn of(resource: &Resource) -> Self {
        ResourceKey::new(
            resource.kind(),
            resource.metadata.namespace.as_str(),
            resource.metadata.name.as_str(),
        )
    }
}

/// `HTTPRoute default/reviews`, as model messages name resources.
impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A resource as stored.
#[derive(Clone, Debug)]
pub struct StoredResource {
    pub key: ResourceKey,
    /// The store revision of the commit that last changed it.
    pub resource_version: u64,
    /// The document as the user wrote it (as JSON), without server-set fields.
    pub document: serde_json::Value,
    pub resource: Resource,
}

impl StoredResource {
    /// The store revision of the commit that created it (kept through later changes;
    /// route precedence breaks ties by it, oldest first).
    pub fn created_version(&self) -> u64 {
        self.resource
            .metadata
            .created
            .unwrap_or(self.resource_version)
    }
}

/// What an apply did to one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedResource {
    pub key: ResourceKey,
    pub resource_version: u64,
    pub change: Change,
}

/// The result of an apply, in the order of the batch.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The store revision after the apply (unmoved if nothing changed).
    pub revision: u64,
    pub resources: Vec<AppliedResource>,
    /// Warnings this apply brought: about the applied resources, or new ones about
    /// resources already stored (a route whose Service lost a port).
    pub warnings: Vec<Warning>,
}

#[derive(Clone, Debug)]
pub struct Deleted {
    pub revision: u64,
    /// New warnings the removal brought, such as routes left pointing at nothing.
    pub warnings: Vec<Warning>,
}

/// A resource whose `resourceVersion` is not the one the caller expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub key: ResourceKey,
    pub expected: u64,
    /// Its version now, or `None` if it no longer exists.
    pub actual: Option<u64>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.actual {
            Some(actual) => write!(
                f,
                "{}: resourceVersion {} is stale (it is now {actual}): it changed since you \
                 read it; get it again, redo your change and retry",
                self.key, self.expected
            ),
            None => write!(
                f,
                "{}: resourceVersion {} was given but the resource does not exist (it was \
                 deleted); remove metadata.resourceVersion to create it anew",
                self.key, self.expected
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The change would leave an invalid set of resources; nothing was changed.
    #[error("{}", join(.0))]
    Invalid(Vec<Diagnostic>),
    /// Some resource is not at the version the caller expected; nothing was changed.
    #[error("{}", join(.0))]
    Conflict(Vec<Conflict>),
    #[error("{0} does not exist")]
    NotFound(ResourceKey),
    #[error("cannot open the store {}: {message}", path.display())]
    Open { path: PathBuf, message: String },
    /// The backend failed (disk full, I/O error); the change was not made.
    #[error("the store failed: {0}; check the disk under --data-dir and the control plane's log")]
    Backend(String),
}

fn join<T: ToString>(items: &[T]) -> String {
    let lines: Vec<String> = items.iter().map(ToString::to_string).collect();
    lines.join("\n")
}
