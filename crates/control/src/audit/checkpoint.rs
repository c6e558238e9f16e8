//! Signed checkpoints. Every [`EVERY`] (and on `POST /api/v1/audit/checkpoint`), when the
//! log has grown since the last one, the control plane appends an entry that signs the
//! entry before it, its number and hash, with the CA's key. The hash chain shows any edit
//! of an entry; a checkpoint also shows a chain recomputed from the edit onwards, by someone
//! who could write the store but not sign with the CA's key (an operator's CA given by file
//! is not in the store), and every copy of the log kept elsewhere (`--audit-file`) carries
//! signed heads to compare against.

use super::{hex, AuditEntry, AuditRecord};
use crate::ca::{MeshCa, Root};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The action of a checkpoint entry.
pub const ACTION: &str = "audit.checkpoint";

/// How often the head is signed, when entries were added since the last checkpoint.
pub const EVERY: Duration = Duration::from_secs(10 * 60);

/// A checkpoint entry's `after`: the entry it signs, and the signature.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    head: u64,
    hash: String,
    /// SHA-256 of the signing root's certificate.
    signer: String,
    /// Over [`statement`], hex.
    signature: String,
}

/// What is signed: the head's number and hash, under a fixed prefix.
fn statement(head: u64, hash: &str) -> Vec<u8> {
    format!("weft audit checkpoint {head} {hash}").into_bytes()
}

/// Writes checkpoints into one store's log, signed by one CA.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    ca: Arc<MeshCa>,
    /// The number of the last checkpoint written: a head that is one is not signed again.
    last: Arc<AtomicU64>,
}

impl Checkpointer {
    pub fn new(store: Arc<dyn Store>, ca: Arc<MeshCa>) -> Arc<Checkpointer> {
        Arc::new(Checkpointer {
            store,
            ca,
            last: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Appends a checkpoint signing the current head, unless the head already is one or
    /// the log is empty. The checkpoint's number, if one was written.
    pub async fn write(&self) -> Result<Option<u64>, StoreError> {
        let signer = self.ca.authority();
        let fingerprint = self.ca.roots().0.sha256;
        let last = self.last.clone();
        let before = last.load(Ordering::Relaxed);
        self.store
            .audit_after_head(Box::new(move |(head, hash)| {
                if head == 0 || head == last.load(Ordering::Relaxed) {
                    return None;
                }
                let signature = match signer.sign_statement(&statement(head, hash)) {
                    Ok(signature) => signature,
                    Err(error) => {
                        tracing::error!(%error, "cannot sign an audit checkpoint");
                        return None;
                    }
                };
                last.store(head + 1, Ordering::Relaxed);
                let checkpoint = Checkpoint {
                    head,
                    hash: hash.to_owned(),
                    signer: fingerprint,
                    signature: hex(&signature),
                };
                let mut record =
                    AuditRecord::new(crate::store::CONTROL_PLANE, ACTION, "the audit log")
                        .detail(format!("entries 1 to {head} signed by the CA"));
                record.after =
                    Some(serde_json::to_value(checkpoint).expect("a checkpoint encodes"));
                Some(record)
            }))
            .await?;
        let after = self.last.load(Ordering::Relaxed);
        Ok((after != before).then_some(after))
    }

    /// Writes a checkpoint every `every` while the control plane runs.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            if let Err(error) = self.write().await {
                tracing::error!(%error, "could not write an audit checkpoint");
            }
        }
    }
}

/// What a checkpoint proves, once its place in the chain checked out.
pub enum Signed {
    /// Signed by a root the control plane holds now.
    Verified,
    /// Signed by a root it no longer holds (retired by a rotation), so not checkable here.
    UnknownSigner,
}

/// Checks the checkpoint `entry`, which the chain put right after the entry with hash
/// `prev`: it must sign exactly that entry, and with a root in `roots` its signature must
/// verify.
pub fn check(entry: &AuditEntry, prev: &str, roots: &[Root]) -> Result<Signed, String> {
    let checkpoint: Checkpoint = entry
        .after
        .clone()
        .and_then(|after| serde_json::from_value(after).ok())
        .ok_or("the checkpoint does not read")?;
    if checkpoint.head + 1 != entry.seq || checkpoint.hash != prev {
        return Err(format!(
            "the checkpoint signs entry {} with a hash that is not the one before it",
            checkpoint.head
        ));
    }
    let Some(root) = roots.iter().find(|root| root.sha256 == checkpoint.signer) else {
        return Ok(Signed::UnknownSigner);
    };
    let signature = unhex(&checkpoint.signature).ok_or("the checkpoint's signature is not hex")?;
    weft_identity::verify_statement(
        &root.cert_pem,
        &statement(checkpoint.head, &checkpoint.hash),
        &signature,
    )
    .map_err(|_| "the checkpoint's signature does not verify with the CA's key".to_owned())?;
    Ok(Signed::Verified)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
