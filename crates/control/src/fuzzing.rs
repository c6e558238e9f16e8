//! What the fuzz targets in `fuzz/` need of the control plane, compiled only with
//! `--cfg fuzzing`.

use crate::ca::{CaSource, MeshCa};
use crate::identity::IdentityService;
use crate::revocation::Revocations;
use crate::store::{RedbStore, Store};
use crate::tokens::TokenStore;
use std::path::Path;
use std::sync::Arc;

/// The Identity service a control plane runs, on a fresh store in `dir`.
pub async fn identity_service(dir: &Path) -> IdentityService {
    let _ = std::fs::remove_dir_all(dir);
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open(dir).expect("a store in a fresh directory"));
    let resources = store.subscribe();
    let current = resources.borrow().clone();
    let ca = MeshCa::load_or_create(&*store, &CaSource::Store, &current)
        .await
        .expect("a CA");
    let revocations = Revocations::open(store.clone()).await.expect("revocations");
    IdentityService::new(
        Arc::new(ca),
        Arc::new(TokenStore::new(store)),
        resources,
        revocations.watch(),
    )
}
