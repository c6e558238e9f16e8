//! What each resource's status is computed from: when it last changed, and which store
//! revision each config version reflects.
//!
//! A proxy's ACK names a config version; a resource counts as in force on that proxy when
//! the version was compiled from a revision at or after the resource's last change. Versions
//! are content hashes, so one version can stand for several revisions (a change that
//! compiles to nothing new, such as an AuthorizationPolicy today): it stands for the latest,
//! because a proxy running it runs exactly what that revision compiles to.

use crate::resource_set::ResourceSet;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// `(kind as written in "kind:", namespace, name)`.
type ResourceKey = (String, String, String);

#[derive(Default)]
pub(super) struct StatusIndex {
    seen: Option<Arc<ResourceSet>>,
    /// The revision at which each resource in force last changed or appeared.
    changed_at: HashMap<ResourceKey, u64>,
    /// The latest revision each version of interest was compiled from: the current one and
    /// those some proxy still runs or rejected (pruned by the registry).
    revisions: HashMap<String, u64>,
    /// The versions in force: the whole mesh's and one per scope.
    current: HashSet<String>,
}

impl StatusIndex {
    /// Records that `set` compiles to `versions`, the versions now in force.
    pub fn published<'v>(
        &mut self,
        set: &Arc<ResourceSet>,
        versions: impl Iterator<Item = &'v str>,
    ) {
        let is_new = self
            .seen
            .as_ref()
            .is_none_or(|seen| seen.revision != set.revision);
        if is_new {
            self.index_changes(set);
        }
        self.current.clear();
        for version in versions {
            let revision = self.revisions.entry(version.to_owned()).or_insert(0);
            *revision = (*revision).max(set.revision);
            self.current.insert(version.to_owned());
        }
    }

    fn index_changes(&mut self, set: &Arc<ResourceSet>) {
        let before: HashMap<ResourceKey, &weft_model::Resource> = self
            .seen
            .iter()
            .flat_map(|seen| seen.resources.iter())
            .map(|resource| (key_of(resource), resource))
            .collect();
        let mut changed_at = HashMap::with_capacity(set.resources.len());
        for resource in &set.resources {
            let key = key_of(resource);
            let unchanged = before.get(&key).is_some_and(|old| *old == resource);
            let at = match self.changed_at.get(&key) {
                Some(&at) if unchanged => at,
                _ => set.revision,
            };
            changed_at.insert(key, at);
        }
        self.changed_at = changed_at;
        self.seen = Some(set.clone());
    }

    pub fn is_current(&self, version: &str) -> bool {
        self.current.contains(version)
    }

    pub fn revision_of(&self, version: &str) -> Option<u64> {
        self.revisions.get(version).copied()
    }

    /// `None` when the resource is not in the revision last compiled.
    pub fn changed_at(&self, kind: &str, namespace: &str, name: &str) -> Option<u64> {
        self.changed_at
            .get(&(kind.to_owned(), namespace.to_owned(), name.to_owned()))
            .copied()
    }

    /// Forgets versions nobody refers to any more, so the map stays as small as the set of
    /// versions proxies actually run.
    pub fn retain_versions<'a>(&mut self, referenced: impl Iterator<Item = &'a str>) {
        let keep: HashSet<&str> = referenced.collect();
        let current = &self.current;
        self.revisions
            .retain(|version, _| current.contains(version) || keep.contains(version.as_str()));
    }
}

fn key_of(resource: &weft_model::Resource) -> ResourceKey {
    (
        resource.kind().as_str().to_owned(),
        resource.metadata.namespace.to_string(),
        resource.metadata.name.to_string(),
    )
}
