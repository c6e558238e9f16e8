//! The rules of a change, apart from how a backend persists it: stale versions conflict,
//! the set a change leaves must validate, identical documents change nothing, and every
//! resource a commit changes gets that commit's revision as its `resourceVersion`.
//!
//! A backend holds the committed [`Snapshot`], asks for a [`Plan`], persists its
//! [`Write`]s in one transaction, and only then makes `plan.next` current.

use super::{
    Applied, AppliedResource, ApplyItem, Change, Conflict, Deleted, Kind, ResourceKey, StoreError,
    StoredResource,
};
use crate::resource_set::ResourceSet;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use weft_model::{validate, Location, Resource, Warning};

/// What messages about already-stored resources point at, since the file they came from
/// is not kept.
pub(super) fn stored_location() -> Location {
    Location {
        file: Arc::from("stored"),
        line: 1,
        column: 1,
    }
}

/// The committed state, kept in memory so reads never touch the disk.
#[derive(Clone, Debug, Default)]
pub(super) struct Snapshot {
    pub revision: u64,
    pub entries: BTreeMap<ResourceKey, Arc<StoredResource>>,
}

impl Snapshot {
    pub fn resource_set(&self) -> ResourceSet {
        ResourceSet {
            revision: self.revision,
            resources: self.resources().cloned().collect(),
        }
    }

    fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.entries.values().map(|entry| &entry.resource)
    }
}

/// The virtual IP slots Services hold, and the lowest free ones for new Services: a
/// Service keeps its slot (so its address) for its whole life, and a slot is free again
/// only once its Service is deleted.
pub(super) struct Slots {
    taken: HashSet<u32>,
    /// Every slot below it is taken.
    lowest_free: u32,
}

impl Slots {
    pub fn of(snapshot: &Snapshot) -> Slots {
        Slots {
            taken: snapshot
                .entries
                .values()
                .filter_map(|entry| entry.resource.metadata.virtual_ip_slot)
                .collect(),
            lowest_free: 0,
        }
    }

    pub fn take(&mut self) -> u32 {
        while self.taken.contains(&self.lowest_free) {
            self.lowest_free += 1;
        }
        self.taken.insert(self.lowest_free);
        self.lowest_free
    }

    /// Gives every Service of `snapshot` without a slot (stored before slots existed) one,
    /// in name order; returns them, to be persisted.
    pub fn fill(snapshot: &mut Snapshot) -> Vec<(ResourceKey, u32)> {
        let mut slots = Slots::of(snapshot);
        let mut filled = Vec::new();
        for (key, entry) in snapshot.entries.iter_mut() {
            if key.kind == Kind::Service && entry.resource.metadata.virtual_ip_slot.is_none() {
                let slot = slots.take();
                Arc::make_mut(entry).resource.metadata.virtual_ip_slot = Some(slot);
                filled.push((key.clone(), slot));
            }
        }
        filled
    }
}

/// One row to write.
pub(super) enum Write {
    Put(Arc<StoredResource>),
    Remove(ResourceKey),
}

pub(super) struct Plan {
    /// The snapshot once the writes are committed.
    pub next: Snapshot,
    /// Empty when nothing changes: then there is nothing to commit.
    pub writes: Vec<Write>,
}

pub(super) fn apply(
    current: &Snapshot,
    batch: Vec<ApplyItem>,
) -> Result<(Plan, Applied), StoreError> {
    let conflicts: Vec<Conflict> = batch
        .iter()
        .filter_map(|item| {
            let expected = item.expected_version?;
            let key = ResourceKey::of(&item.resource);
            let actual = current.entries.get(&key).map(|e| e.resource_version);
            (actual != Some(expected)).then_some(Conflict {
                key,
                expected,
                actual,
            })
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(StoreError::Conflict(conflicts));
    }

    // The set as it would be, with the batch's own locations so messages name the user's
    // files. Duplicates inside the batch stay in, for `validate` to report.
    let replaced: HashSet<ResourceKey> = batch
        .iter()
        .map(|item| ResourceKey::of(&item.resource))
        .collect();
    let candidate: Vec<Resource> = current
        .entries
        .iter()
        .filter(|(key, _)| !replaced.contains(*key))
        .map(|(_, entry)| entry.resource.clone())
        .chain(batch.iter().map(|item| item.resource.clone()))
        .collect();
    let warnings = new_warnings(current, &candidate)?;

    let revision = current.revision + 1;
    let mut slots = Slots::of(current);
    let mut next = current.clone();
    let mut writes = Vec::new();
    let mut resources = Vec::with_capacity(batch.len());
    for item in batch {
        let key = ResourceKey::of(&item.resource);
        let existing = current.entries.get(&key);
        let change = match existing {
            Some(entry) if entry.document == item.document => Change::Unchanged,
            Some(_) => Change::Configured,
            None => Change::Created,
        };
        let resource_version = match (change, existing) {
            (Change::Unchanged, Some(entry)) => entry.resource_version,
            _ => {
                let mut resource = item.resource;
                resource.location = stored_location();
                resource.metadata.created =
                    Some(existing.map_or(revision, |entry| entry.created_version()));
                if key.kind == Kind::Service {
                    let held = existing.and_then(|e| e.resource.metadata.virtual_ip_slot);
                    resource.metadata.virtual_ip_slot = held.or_else(|| Some(slots.take()));
                }
                let stored = Arc::new(StoredResource {
                    key: key.clone(),
                    resource_version: revision,
                    document: item.document,
                    resource,
                });
                next.entries.insert(key.clone(), stored.clone());
                writes.push(Write::Put(stored));
                revision
            }
        };
        resources.push(AppliedResource {
            key,
            resource_version,
            change,
        });
    }
    if !writes.is_empty() {
        next.revision = revision;
    }
    let applied = Applied {
        revision: next.revision,
        resources,
        warnings,
    };
    Ok((Plan { next, writes }, applied))
}

pub(super) fn delete(
    current: &Snapshot,
    key: ResourceKey,
    expected_version: Option<u64>,
) -> Result<(Plan, Deleted), StoreError> {
    let Some(entry) = current.entries.get(&key) else {
        return Err(StoreError::NotFound(key));
    };
    if let Some(expected) = expected_version.filter(|v| *v != entry.resource_version) {
        return Err(StoreError::Conflict(vec![Conflict {
            key,
            expected,
            actual: Some(entry.resource_version),
        }]));
    }
    let mut next = current.clone();
    next.entries.remove(&key);
    next.revision += 1;
    let remaining: Vec<Resource> = next.resources().cloned().collect();
    let warnings = new_warnings(current, &remaining)?;
    let deleted = Deleted {
        revision: next.revision,
        warnings,
    };
    let plan = Plan {
        next,
        writes: vec![Write::Remove(key)],
    };
    Ok((plan, deleted))
}

/// Validates `candidate` and keeps the warnings that were not there before: the caller
/// hears about what their change brought, not about every old dangling reference.
fn new_warnings(current: &Snapshot, candidate: &[Resource]) -> Result<Vec<Warning>, StoreError> {
    let warnings =
        validate(candidate).map_err(|err| StoreError::Invalid(err.diagnostics().to_vec()))?;
    let current: Vec<Resource> = current.resources().cloned().collect();
    // A stored set predating a stricter model may no longer validate; then every warning
    // counts as new.
    let before: HashSet<String> = validate(&current)
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(warnings
        .into_iter()
        .filter(|warning| !before.contains(&warning.to_string()))
        .collect())
}
