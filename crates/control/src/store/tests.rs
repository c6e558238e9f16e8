use super::*;
use std::path::{Path, PathBuf};

/// A scratch data directory, removed on drop.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-control-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        ScratchDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{ports: [{{port: {port}}}]}}\n"
    )
}

fn route(name: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: {backend}}}]\n  rules:\n  - backendRefs: [{{group: \"\", kind: Service, name: {backend}}}]\n"
    )
}

fn items(source: &str, text: &str) -> Vec<ApplyItem> {
    parse_documents(source, text).unwrap()
}

fn key(kind: Kind, name: &str) -> ResourceKey {
    ResourceKey::new(kind, "default", name)
}

fn changes(applied: &Applied) -> Vec<(String, u64, Change)> {
    applied
        .resources
        .iter()
        .map(|r| (r.key.to_string(), r.resource_version, r.change))
        .collect()
}

#[tokio::test]
async fn versions_follow_commits_and_identical_documents_change_nothing() {
    let dir = ScratchDir::new("versions");
    let store = RedbStore::open(dir.path()).unwrap();
    let both = format!("{}---\n{}", service("a", 80), service("b", 80));
    let applied = store.apply(items("both.yaml", &both)).await.unwrap();
    assert_eq!(applied.revision, 1);
    assert_eq!(
        changes(&applied),
        [
            ("Service default/a".to_owned(), 1, Change::Created),
            ("Service default/b".to_owned(), 1, Change::Created)
        ]
    );

    let again = store.apply(items("both.yaml", &both)).await.unwrap();
    assert_eq!(again.revision, 1, "an identical apply commits nothing");
    assert!(again
        .resources
        .iter()
        .all(|r| r.change == Change::Unchanged));

    let changed = format!("{}---\n{}", service("a", 80), service("b", 81));
    let applied = store.apply(items("both.yaml", &changed)).await.unwrap();
    assert_eq!(
        changes(&applied),
        [
            ("Service default/a".to_owned(), 1, Change::Unchanged),
            ("Service default/b".to_owned(), 2, Change::Configured)
        ]
    );
    let b = store.get(key(Kind::Service, "b")).await.unwrap().unwrap();
    assert_eq!(b.resource_version, 2);
    assert_eq!(b.document["spec"]["ports"][0]["port"], 81);
    assert_eq!(store.list(Some(Kind::HttpRoute)).await.unwrap().len(), 0);
    assert_eq!(store.list(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_invalid_batch_stores_nothing() {
    let dir = ScratchDir::new("atomic");
    let store = RedbStore::open(dir.path()).unwrap();
    store
        .apply(items("a.yaml", &service("a", 80)))
        .await
        .unwrap();
    // The first document is fine; the second duplicates it: neither may land.
    let batch = format!("{}---\n{}", service("b", 80), service("b", 81));
    let err = store.apply(items("dup.yaml", &batch)).await.unwrap_err();
    let StoreError::Invalid(problems) = err else {
        panic!("expected a validation error, got {err:?}");
    };
    assert_eq!(
        problems[0].to_string(),
        "dup.yaml:6:1: duplicate Service default/b: it is also defined at dup.yaml:1:1"
    );
    assert_eq!(store.list(None).await.unwrap().len(), 1);
    assert_eq!(store.subscribe().borrow().revision, 1);
}

#[tokio::test]
async fn a_stale_version_rejects_the_whole_batch() {
    let dir = ScratchDir::new("conflict");
    let store = RedbStore::open(dir.path()).unwrap();
    store
        .apply(items("a.yaml", &service("a", 80)))
        .await
        .unwrap();
    let read = store.get(key(Kind::Service, "a")).await.unwrap().unwrap();

    // Someone else changes `a` after we read it.
    store
        .apply(items("a.yaml", &service("a", 81)))
        .await
        .unwrap();

    let ours = service("a", 82).replace(
        "{name: a}",
        &format!(
            "{{name: a, resourceVersion: \"{}\"}}",
            read.resource_version
        ),
    );
    let batch = format!("{}---\n{ours}", service("c", 80));
    let err = store.apply(items("ours.yaml", &batch)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service default/a: resourceVersion 1 is stale (it is now 2): it changed since you \
         read it; get it again, redo your change and retry"
    );
    assert!(store.get(key(Kind::Service, "c")).await.unwrap().is_none());
    let a = store.get(key(Kind::Service, "a")).await.unwrap().unwrap();
    assert_eq!(a.document["spec"]["ports"][0]["port"], 81);

    // The current version is accepted.
    let current = ours.replace("resourceVersion: \"1\"", "resourceVersion: 2");
    let applied = store.apply(items("ours.yaml", &current)).await.unwrap();
    assert_eq!(applied.resources[0].resource_version, 3);
    let a = store.get(key(Kind::Service, "a")).await.unwrap().unwrap();
    assert!(
        a.document["metadata"].get("resourceVersion").is_none(),
        "the version is the store's, not part of the document"
    );
}

#[tokio::test]
async fn delete_checks_existence_and_version() {
    let dir = ScratchDir::new("delete");
    let store = RedbStore::open(dir.path()).unwrap();
    let text = format!("{}---\n{}", service("web", 80), route("web", "web"));
    store.apply(items("web.yaml", &text)).await.unwrap();

    let err = store
        .delete(key(Kind::Service, "web"), Some(7))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let deleted = store
        .delete(key(Kind::Service, "web"), Some(1))
        .await
        .unwrap();
    assert_eq!(deleted.revision, 2);
    let warnings: Vec<String> = deleted.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings.len(),
        2,
        "the route now points at nothing: {warnings:?}"
    );
    assert!(warnings[0].starts_with("stored:1:1: HTTPRoute default/web: spec.parentRefs[0]"));

    let err = store
        .delete(key(Kind::Service, "web"), None)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Service default/web does not exist");
}

#[tokio::test]
async fn warnings_are_about_what_the_change_brought() {
    let dir = ScratchDir::new("warnings");
    let store = RedbStore::open(dir.path()).unwrap();
    let applied = store
        .apply(items("route.yaml", &route("web", "web")))
        .await
        .unwrap();
    assert_eq!(applied.warnings.len(), 2);
    assert!(applied.warnings[0]
        .to_string()
        .starts_with("route.yaml:1:1: HTTPRoute default/web: spec.parentRefs[0]: Service"));
    // An unrelated apply does not repeat old warnings about stored resources.
    let applied = store
        .apply(items("api.yaml", &service("api", 80)))
        .await
        .unwrap();
    assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
}

#[tokio::test]
async fn reopening_keeps_resources_versions_and_meta() {
    let dir = ScratchDir::new("reopen");
    {
        let store = RedbStore::open(dir.path()).unwrap();
        let text = format!("{}---\n{}", service("web", 80), route("web", "web"));
        store.apply(items("web.yaml", &text)).await.unwrap();
        store
            .apply(items("web.yaml", &service("web", 81)))
            .await
            .unwrap();
        store
            .put_meta("ca-root".to_owned(), b"root".to_vec())
            .await
            .unwrap();
    }
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.path(), dir.path().join("weft.redb"));
    let set = store.subscribe().borrow().clone();
    assert_eq!(set.revision, 2);
    assert_eq!(set.resources.len(), 2);
    let listed: Vec<(String, u64)> = store
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.key.to_string(), r.resource_version))
        .collect();
    assert_eq!(
        listed,
        [
            ("Service default/web".to_owned(), 2),
            ("HTTPRoute default/web".to_owned(), 1)
        ]
    );
    assert_eq!(
        store.get_meta("ca-root".to_owned()).await.unwrap(),
        Some(b"root".to_vec())
    );
    assert_eq!(store.get_meta("other".to_owned()).await.unwrap(), None);
    // The reloaded resources are the model's own, so the next apply compares cleanly.
    let again = store
        .apply(items("web.yaml", &service("web", 81)))
        .await
        .unwrap();
    assert_eq!(again.resources[0].change, Change::Unchanged);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = ScratchDir::new("locked");
    let _first = RedbStore::open(dir.path()).unwrap();
    let Err(err) = RedbStore::open(dir.path()) else {
        panic!("a second open succeeded");
    };
    assert!(
        err.to_string()
            .contains("is another `weft control` running"),
        "{err}"
    );
}

#[tokio::test]
async fn every_commit_is_published() {
    let dir = ScratchDir::new("watch");
    let store = RedbStore::open(dir.path()).unwrap();
    let mut watch = store.subscribe();
    assert_eq!(watch.borrow_and_update().revision, 0);

    store
        .apply(items("a.yaml", &service("a", 80)))
        .await
        .unwrap();
    assert!(watch.has_changed().unwrap());
    let set = watch.borrow_and_update().clone();
    assert_eq!(set.revision, 1);
    assert_eq!(set.resources[0].metadata.name.as_str(), "a");

    store
        .apply(items("a.yaml", &service("a", 80)))
        .await
        .unwrap();
    assert!(
        !watch.has_changed().unwrap(),
        "nothing changed, nothing published"
    );

    store.delete(key(Kind::Service, "a"), None).await.unwrap();
    let set = watch.borrow_and_update().clone();
    assert_eq!((set.revision, set.resources.len()), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_from_one_version_let_exactly_one_through() {
    let dir = ScratchDir::new("concurrent");
    let store = RedbStore::open(dir.path()).unwrap();
    store
        .apply(items("a.yaml", &service("a", 80)))
        .await
        .unwrap();
    let writers: Vec<_> = (0..8u16)
        .map(|i| {
            let store = store.clone();
            let text = service("a", 81 + i).replace("{name: a}", "{name: a, resourceVersion: 1}");
            tokio::spawn(async move { store.apply(items("a.yaml", &text)).await })
        })
        .collect();
    let mut won = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict(conflicts)) => assert_eq!(conflicts[0].actual, Some(2)),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.subscribe().borrow().revision, 2);
}

#[tokio::test]
async fn equal_route_matches_go_to_the_oldest_route_across_changes_and_reopens() {
    let dir = ScratchDir::new("created");
    // Route names the other way round from their age, so name order would pick `a`.
    let routes_in_order = |store: &RedbStore| {
        let set = store.subscribe().borrow().clone();
        let config = weft_model::compile(&set.resources);
        let web = config.services.iter().find(|s| s.name == "web").unwrap();
        web.routes
            .iter()
            .map(|route| {
                route
                    .name
                    .split('/')
                    .nth(1)
                    .unwrap_or(&route.name)
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    {
        let store = RedbStore::open(dir.path()).unwrap();
        store
            .apply(items(
                "web.yaml",
                &format!("{}---\n{}", service("web", 80), route("z", "web")),
            ))
            .await
            .unwrap();
        store
            .apply(items("a.yaml", &route("a", "web")))
            .await
            .unwrap();
        assert_eq!(routes_in_order(&store)[0], "z");
        // A change keeps the route's age.
        let changed = route("z", "web").replace("rules:\n", "rules:\n  - matches: [{path: {value: /z}}]\n    backendRefs: [{group: \"\", kind: Service, name: web}]\n");
        store.apply(items("z.yaml", &changed)).await.unwrap();
        assert!(routes_in_order(&store).ends_with(&["z".to_owned(), "a".to_owned()]));
    }
    let store = RedbStore::open(dir.path()).unwrap();
    let stored = store.get(key(Kind::HttpRoute, "z")).await.unwrap().unwrap();
    assert_eq!((stored.created_version(), stored.resource_version), (1, 3));
    assert!(routes_in_order(&store).ends_with(&["z".to_owned(), "a".to_owned()]));
    // Deleted and created again, it is the youngest.
    store.delete(key(Kind::HttpRoute, "z"), None).await.unwrap();
    store
        .apply(items("z.yaml", &route("z", "web")))
        .await
        .unwrap();
    assert_eq!(routes_in_order(&store), ["a", "z"]);
}

/// Each Service's virtual IP comes from its slot: a slot is held for the Service's whole
/// life (through updates and restarts) and goes to a new Service only once freed.
#[tokio::test]
async fn virtual_ip_slots_are_kept_for_life_and_reused_only_when_freed() {
    let dir = ScratchDir::new("slots");
    let slot = |store: &RedbStore, name: &str| {
        let set = store.subscribe().borrow().clone();
        set.resources
            .iter()
            .find(|r| r.kind() == Kind::Service && r.metadata.name.as_str() == name)
            .and_then(|r| r.metadata.virtual_ip_slot)
    };
    {
        let store = RedbStore::open(dir.path()).unwrap();
        let text = format!("{}---\n{}", service("a", 80), service("b", 80));
        store.apply(items("ab.yaml", &text)).await.unwrap();
        assert_eq!((slot(&store, "a"), slot(&store, "b")), (Some(0), Some(1)));
        // An update keeps the slot.
        store
            .apply(items("b.yaml", &service("b", 81)))
            .await
            .unwrap();
        assert_eq!(slot(&store, "b"), Some(1));
        store.delete(key(Kind::Service, "a"), None).await.unwrap();
        store
            .apply(items("c.yaml", &service("c", 80)))
            .await
            .unwrap();
        assert_eq!(slot(&store, "c"), Some(0), "a's slot, freed, goes to c");
        store
            .apply(items("d.yaml", &service("d", 80)))
            .await
            .unwrap();
        assert_eq!(slot(&store, "d"), Some(2));
    }
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(
        (slot(&store, "b"), slot(&store, "c"), slot(&store, "d")),
        (Some(1), Some(0), Some(2))
    );
    // The compiled config gives each its address in the default range.
    let set = store.subscribe().borrow().clone();
    let config = weft_model::compile(&set.resources);
    let vip = |name: &str| {
        let service = config.services.iter().find(|s| s.name == name).unwrap();
        service.virtual_ip.map(|ip| ip.to_string())
    };
    assert_eq!(vip("c").as_deref(), Some("240.240.0.1"));
    assert_eq!(vip("b").as_deref(), Some("240.240.0.2"));
}

/// Services stored before slots existed get them when the store opens, in name order,
/// and keep them.
#[test]
fn services_without_a_slot_are_given_one_in_name_order() {
    let mut snapshot = plan::Snapshot::default();
    let held = plan::apply(&snapshot, items("b.yaml", &service("b", 80)))
        .unwrap()
        .0
        .next;
    snapshot = held;
    for name in ["a", "c"] {
        let mut resources = weft_model::load_str("x.yaml", &service(name, 80)).unwrap();
        let resource = resources.pop().unwrap();
        let key = ResourceKey::of(&resource);
        let entry = StoredResource {
            key: key.clone(),
            resource_version: 1,
            document: serde_json::Value::Null,
            resource,
        };
        snapshot.entries.insert(key, Arc::new(entry));
    }
    let filled = plan::Slots::fill(&mut snapshot);
    let names: Vec<(&str, u32)> = filled.iter().map(|(k, s)| (k.name.as_str(), *s)).collect();
    assert_eq!(names, [("a", 1), ("c", 2)], "b already holds 0");
    assert!(plan::Slots::fill(&mut snapshot).is_empty());
}
