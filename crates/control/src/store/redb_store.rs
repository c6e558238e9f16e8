//! The embedded store: one redb file, `<data-dir>/weft.redb`.
//!
//! Each change is one redb write transaction committed with immediate durability, so when
//! a write is acknowledged it is on disk, and a crash at any moment (even `kill -9`
//! mid-commit) leaves either the old state or the new one. The committed state is also
//! held in memory: reads answer from it and never wait for a commit.
//!
//! A commit that fails on I/O (a full disk) leaves redb refusing every later transaction
//! until the database is reopened; the store then reopens it on the next call, so once the
//! disk has room again changes succeed with no restart.

use super::plan::{self, Plan, Snapshot, Write};
use super::{
    Applied, ApplyItem, Deleted, MakeAuditRecord, ResourceKey, Store, StoreError, StoreFuture,
    StoredResource,
};
use crate::audit::{self, AuditRecord};
use crate::resource_set::ResourceSet;
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::watch;
use weft_model::resources::Kind;

/// (kind, namespace, name) -> (resourceVersion, document as JSON).
const RESOURCES: TableDefinition<(&str, &str, &str), (u64, &str)> =
    TableDefinition::new("resources");
/// (kind, namespace, name) -> the revision that created the resource. A table of its own
/// so stores written before it existed still open: a row without one counts as created
/// when it last changed, the oldest it can be known to be.
const CREATED: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("created");
/// The store's own counters; only `revision` so far.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Each Service's virtual IP slot, by the same key (see `plan::Slots`).
const SLOTS: TableDefinition<(&str, &str, &str), u32> = TableDefinition::new("slots");
const REVISION: &str = "revision";
/// Small values other subsystems keep (the CA root, for instance).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The audit log: seq -> (body, hash), appended to and never rewritten (see `crate::audit`).
const AUDIT: TableDefinition<u64, (&str, &str)> = TableDefinition::new("audit");

/// The embedded [`Store`]. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only while a reopen failed: the next call tries again.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// Held by a writer from planning to publishing, so changes are planned against the
    /// latest commit and published in commit order.
    writer: Mutex<()>,
    snapshot: RwLock<Arc<Snapshot>>,
    published: watch::Sender<Arc<ResourceSet>>,
    /// The audit chain's head: the last entry's number and hash. Moved with `writer` held.
    audit_head: Mutex<(u64, String)>,
}

impl RedbStore {
    /// The database file's name inside the data directory.
    pub const FILE_NAME: &'static str = "weft.redb";

    /// Opens `<data_dir>/weft.redb`, creating the directory (0700) and the file (0600) if
    /// needed and making existing ones private, and loads every stored resource. Blocks on
    /// disk I/O.
    pub fn open(data_dir: &Path) -> Result<RedbStore, StoreError> {
        let path = data_dir.join(Self::FILE_NAME);
        let open_error = |message: String| StoreError::Open {
            path: path.clone(),
            message,
        };
        // The store holds the CA key: private from the first byte.
        crate::data_dir::prepare(data_dir).map_err(|err| open_error(err.to_string()))?;
        crate::data_dir::create_private_file(&path).map_err(|err| open_error(err.to_string()))?;
        let db = Database::create(&path).map_err(|err| {
            open_error(match err {
                DatabaseError::DatabaseAlreadyOpen => "another process has it open; is another \
                    `weft control` running with this --data-dir?"
                    .to_owned(),
                other => format!("{other}; check the file's permissions and the disk"),
            })
        })?;
        create_tables(&db).map_err(|err| open_error(err.to_string()))?;
        let mut snapshot = read_all(&db).map_err(open_error)?;
        let filled = plan::Slots::fill(&mut snapshot);
        persist_slots(&db, &filled).map_err(|err| open_error(err.to_string()))?;
        let audit_head = audit_head(&db).map_err(|err| open_error(err.to_string()))?;
        let (published, _) = watch::channel(Arc::new(snapshot.resource_set()));
        Ok(RedbStore {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(db)),
                path,
                writer: Mutex::new(()),
                snapshot: RwLock::new(Arc::new(snapshot)),
                published,
                audit_head: Mutex::new(audit_head),
            }),
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `op` on a blocking thread: it waits for the disk.
    fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || op(&inner))
                .await
                .map_err(|err| StoreError::Backend(format!("the write was interrupted: {err}")))?
        })
    }

    fn current(&self) -> Arc<Snapshot> {
        self.inner.current()
    }
}

impl Store for RedbStore {
    fn apply_as(&self, batch: Vec<ApplyItem>, actor: String) -> StoreFuture<'_, Applied> {
        self.blocking(move |inner| {
            let _writer = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let (plan, applied) = plan::apply(&inner.current(), batch)?;
            inner.commit(plan, &actor)?;
            Ok(applied)
        })
    }

    fn plan_apply(&self, batch: Vec<ApplyItem>) -> StoreFuture<'_, Applied> {
        let planned = plan::apply(&self.current(), batch).map(|(_, applied)| applied);
        Box::pin(async move { planned })
    }

    fn delete_as(
        &self,
        key: ResourceKey,
        expected_version: Option<u64>,
        actor: String,
    ) -> StoreFuture<'_, Deleted> {
        self.blocking(move |inner| {
            let _writer = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let (plan, deleted) = plan::delete(&inner.current(), key, expected_version)?;
            inner.commit(plan, &actor)?;
            Ok(deleted)
        })
    }

    fn audit_after_head(&self, make: MakeAuditRecord) -> StoreFuture<'_, ()> {
        self.blocking(move |inner| {
            let _writer = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let mut head = inner
                .audit_head
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(record) = make((head.0, &head.1)) else {
                return Ok(());
            };
            let chained = audit::chain((head.0, &head.1), record, audit::now());
            inner.with_db(|db| {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                txn.open_table(AUDIT)?
                    .insert(chained.seq, (chained.body.as_str(), chained.hash.as_str()))?;
                txn.commit()?;
                Ok(())
            })?;
            *head = (chained.seq, chained.hash);
            Ok(())
        })
    }

    fn audit_rows(&self, from: u64, limit: usize) -> StoreFuture<'_, Vec<(u64, String, String)>> {
        self.blocking(move |inner| {
            inner.with_db(|db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(AUDIT)?;
                let mut rows = Vec::new();
                for row in table.range(from..)?.take(limit) {
                    let (seq, value) = row?;
                    let (body, hash) = value.value();
                    rows.push((seq.value(), body.to_owned(), hash.to_owned()));
                }
                Ok(rows)
            })
        })
    }

    fn get(&self, key: ResourceKey) -> StoreFuture<'_, Option<StoredResource>> {
        let found = self.current().entries.get(&key).map(|e| (**e).clone());
        Box::pin(async move { Ok(found) })
    }

    fn list(&self, kind: Option<Kind>) -> StoreFuture<'_, Vec<StoredResource>> {
        let snapshot = self.current();
        let found = snapshot
            .entries
            .values()
            .filter(|entry| kind.is_none_or(|kind| entry.key.kind == kind))
            .map(|entry| (**entry).clone())
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn subscribe(&self) -> watch::Receiver<Arc<ResourceSet>> {
        self.inner.published.subscribe()
    }

    fn get_meta(&self, key: String) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.blocking(move |inner| {
            inner.with_db(|db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(META)?;
                let value = table.get(key.as_str())?;
                Ok(value.map(|v| v.value().to_vec()))
            })
        })
    }

    fn put_meta(&self, key: String, value: Vec<u8>) -> StoreFuture<'_, ()> {
        self.blocking(move |inner| {
            inner.with_db(|db| {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                txn.open_table(META)?
                    .insert(key.as_str(), value.as_slice())?;
                txn.commit()?;
                Ok(())
            })
        })
    }
}

impl Inner {
    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `op` on the database. When redb refuses it for an earlier I/O failure, closes
    /// and reopens the database (redb repairs it to the last commit, which is what the
    /// snapshot holds) and runs `op` once more.
    fn with_db<T>(
        &self,
        op: impl Fn(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let run = || -> Result<T, redb::Error> {
            match &*self.db.read().unwrap_or_else(PoisonError::into_inner) {
                Some(db) => op(db),
                None => Err(redb::Error::PreviousIo),
            }
        };
        match run() {
            Err(redb::Error::PreviousIo) => {
                self.reopen()?;
                run().map_err(backend)
            }
            other => other.map_err(backend),
        }
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // The old handle holds the file's lock: it goes first.
        drop(db.take());
        let reopened = Database::create(&self.path).map_err(|err| {
            StoreError::Backend(format!(
                "an earlier write failed (a full disk?) and the store cannot be reopened yet: \
                 {err}; free space under --data-dir and retry"
            ))
        })?;
        tracing::info!(path = %self.path.display(), "reopened the store after a failed write");
        *db = Some(reopened);
        Ok(())
    }

    /// Persists the plan's writes and their audit entries (done by `actor`) in one
    /// transaction, then makes its snapshot current and publishes it. Called with `writer`
    /// held.
    fn commit(&self, plan: Plan, actor: &str) -> Result<(), StoreError> {
        if plan.writes.is_empty() {
            return Ok(());
        }
        let mut head = self
            .audit_head
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entries = self.audit_entries(&plan, actor, (head.0, &head.1));
        let persist = |db: &Database| -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut audit_rows = txn.open_table(AUDIT)?;
                for entry in &entries {
                    audit_rows.insert(entry.seq, (entry.body.as_str(), entry.hash.as_str()))?;
                }
                let mut rows = txn.open_table(RESOURCES)?;
                let mut created = txn.open_table(CREATED)?;
                let mut slots = txn.open_table(SLOTS)?;
                for write in &plan.writes {
                    match write {
                        Write::Put(entry) => {
                            // `Value`'s Display is its compact JSON.
                            let json = entry.document.to_string();
                            rows.insert(row_key(&entry.key), (entry.resource_version, &*json))?;
                            created.insert(row_key(&entry.key), entry.created_version())?;
                            if let Some(slot) = entry.resource.metadata.virtual_ip_slot {
                                slots.insert(row_key(&entry.key), slot)?;
                            }
                        }
                        Write::Remove(key) => {
                            rows.remove(row_key(key))?;
                            created.remove(row_key(key))?;
                            slots.remove(row_key(key))?;
                        }
                    }
                }
                txn.open_table(COUNTERS)?
                    .insert(REVISION, plan.next.revision)?;
            }
            txn.commit()?;
            Ok(())
        };
        self.with_db(persist)?;
        if let Some(last) = entries.last() {
            *head = (last.seq, last.hash.clone());
        }
        let next = Arc::new(plan.next);
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next.clone();
        self.published.send_replace(Arc::new(next.resource_set()));
        Ok(())
    }
}

impl Inner {
    /// One audit entry per write of `plan`, with the document before and after, chained
    /// after `head`.
    fn audit_entries(&self, plan: &Plan, actor: &str, head: (u64, &str)) -> Vec<audit::Chained> {
        let before = self.current();
        let time = audit::now();
        let mut head = (head.0, head.1.to_owned());
        let mut entries = Vec::with_capacity(plan.writes.len());
        for write in &plan.writes {
            let key = match write {
                Write::Put(entry) => &entry.key,
                Write::Remove(key) => key,
            };
            let old = before.entries.get(key).map(|e| e.document.clone());
            let (action, after) = match write {
                Write::Put(entry) if old.is_some() => {
                    ("resource.update", Some(entry.document.clone()))
                }
                Write::Put(entry) => ("resource.create", Some(entry.document.clone())),
                Write::Remove(_) => ("resource.delete", None),
            };
            let mut record = AuditRecord::new(actor, action, key.to_string());
            record.before = old;
            record.after = after;
            let chained = audit::chain((head.0, &head.1), record, time.clone());
            head = (chained.seq, chained.hash.clone());
            entries.push(chained);
        }
        entries
    }
}

fn row_key(key: &ResourceKey) -> (&str, &str, &str) {
    (key.kind.as_str(), &key.namespace, &key.name)
}

fn backend(err: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(err.into().to_string())
}

/// Writes slots given at open to Services stored without one.
fn persist_slots(db: &Database, filled: &[(ResourceKey, u32)]) -> Result<(), redb::Error> {
    if filled.is_empty() {
        return Ok(());
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut slots = txn.open_table(SLOTS)?;
        for (key, slot) in filled {
            slots.insert(row_key(key), *slot)?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(RESOURCES)?;
    txn.open_table(CREATED)?;
    txn.open_table(COUNTERS)?;
    txn.open_table(SLOTS)?;
    txn.open_table(META)?;
    txn.open_table(AUDIT)?;
    txn.commit()?;
    Ok(())
}

/// The audit log's last entry, number and hash: where the next one chains on.
fn audit_head(db: &Database) -> Result<(u64, String), redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(AUDIT)?;
    let head = match table.last()? {
        Some((seq, value)) => (seq.value(), value.value().1.to_owned()),
        None => (0, audit::GENESIS.to_owned()),
    };
    Ok(head)
}

/// Loads every row, re-reading each document with the model (`Resource` is not stored).
fn read_all(db: &Database) -> Result<Snapshot, String> {
    let txn = db.begin_read().map_err(|err| err.to_string())?;
    let counters = txn.open_table(COUNTERS).map_err(|err| err.to_string())?;
    let revision = counters
        .get(REVISION)
        .map_err(|err| err.to_string())?
        .map_or(0, |v| v.value());
    let rows = txn.open_table(RESOURCES).map_err(|err| err.to_string())?;
    let created = txn.open_table(CREATED).map_err(|err| err.to_string())?;
    let slots = txn.open_table(SLOTS).map_err(|err| err.to_string())?;
    let mut snapshot = Snapshot {
        revision,
        ..Snapshot::default()
    };
    for row in rows.iter().map_err(|err| err.to_string())? {
        let (key, value) = row.map_err(|err| err.to_string())?;
        let (kind, namespace, name) = key.value();
        let (resource_version, json) = value.value();
        let created_version = created
            .get((kind, namespace, name))
            .map_err(|err| err.to_string())?
            .map_or(resource_version, |v| v.value());
        let slot = slots
            .get((kind, namespace, name))
            .map_err(|err| err.to_string())?
            .map(|v| v.value());
        let entry = load_row(json, resource_version, created_version, slot).map_err(|why| {
            format!(
                "the stored {kind} {namespace}/{name} no longer loads: {why}; run the weft \
                 version that wrote it, or move the file away to start empty"
            )
        })?;
        snapshot.entries.insert(entry.key.clone(), Arc::new(entry));
    }
    Ok(snapshot)
}

fn load_row(
    json: &str,
    resource_version: u64,
    created_version: u64,
    virtual_ip_slot: Option<u32>,
) -> Result<StoredResource, String> {
    let document = serde_json::from_str(json).map_err(|err| err.to_string())?;
    let mut resources = weft_model::load_str("stored", json).map_err(|err| err.to_string())?;
    let (Some(mut resource), None) = (resources.pop(), resources.pop()) else {
        return Err("expected one resource in the row".to_owned());
    };
    resource.location = plan::stored_location();
    resource.metadata.created = Some(created_version);
    resource.metadata.virtual_ip_slot = virtual_ip_slot;
    Ok(StoredResource {
        key: ResourceKey::of(&resource),
        resource_version,
        document,
        resource,
    })
}
