//! The audit log: who changed what and when, every credential and certificate issued or
//! revoked, every root rotation and every refused API call, kept in the store in a table
//! nothing rewrites. Each entry carries the hash of the one before it, so editing, removing
//! or reordering any entry breaks the chain at that entry, and `weft audit verify` names it.
//!
//! A resource change and its entry are written in one transaction: there is no change
//! without its entry. The chain is `hash = SHA-256(previous hash || body)` over the exact
//! stored text of the body, which names the previous hash itself.

mod checkpoint;

pub use checkpoint::{Checkpointer, EVERY as CHECKPOINT_EVERY};

use crate::api::{requested_ttl, ApiError};
use crate::ca::{MeshCa, Root};
use crate::store::Store;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it is numbered and chained.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// The credential's name (`token 1a2b... (ci)`), a proxy's identity, or `control plane`.
    pub actor: String,
    /// `resource.apply`, `resource.delete`, `token.create`, `api.denied`, ...
    pub action: String,
    /// What it was done to: `HTTPRoute default/web`, a token id, a SPIFFE id.
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub detail: Option<String>,
}

impl AuditRecord {
    pub fn new(actor: &str, action: &str, target: impl Into<String>) -> Self {
        AuditRecord {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.into(),
            before: None,
            after: None,
            detail: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// One entry as stored (its body) and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The hash of the entry before ([`GENESIS`] for the first).
    pub prev: String,
}

/// An entry's body as stored, and its hash.
pub struct Chained {
    pub seq: u64,
    pub body: String,
    pub hash: String,
}

/// Numbers `record` after `(seq, hash)`, the chain's head, and chains it.
pub fn chain(head: (u64, &str), record: AuditRecord, time: String) -> Chained {
    let entry = AuditEntry {
        seq: head.0 + 1,
        time,
        actor: record.actor,
        action: record.action,
        target: record.target,
        before: record.before,
        after: record.after,
        detail: record.detail,
        prev: head.1.to_owned(),
    };
    let body = serde_json::to_string(&entry).expect("an entry serializes");
    let hash = hash_of(head.1, &body);
    Chained {
        seq: entry.seq,
        body,
        hash,
    }
}

fn hash_of(prev: &str, body: &str) -> String {
    let mut input = Vec::with_capacity(prev.len() + body.len());
    input.extend_from_slice(prev.as_bytes());
    input.extend_from_slice(body.as_bytes());
    hex(digest(&SHA256, &input).as_ref())
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Why the chain is not intact, at the first entry where it is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Broken {
    pub seq: u64,
    pub why: String,
}

/// Checks stored rows `(seq, body, hash)`, in order from the first: every body reads, is
/// numbered in sequence, names the hash before it, and hashes to what is stored. The
/// number of entries checked, or the first that fails.
pub fn verify<'a>(rows: impl IntoIterator<Item = (u64, &'a str, &'a str)>) -> Result<u64, Broken> {
    let mut verifier = Verifier::trusting(Vec::new());
    for (seq, body, hash) in rows {
        verifier.check(seq, body, hash)?;
    }
    Ok(verifier.checked())
}

/// [`verify`] a page at a time, also checking signed checkpoints against `roots`.
pub struct Verifier {
    prev: String,
    expected_seq: u64,
    roots: Vec<Root>,
    checkpoints: Checkpoints,
}

/// The signed checkpoints a verification met.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoints {
    /// Signed by a root the control plane holds.
    pub verified: u64,
    /// Signed by a root it no longer holds (retired by a rotation): in the chain, but their
    /// signature cannot be checked here.
    pub unknown_signer: u64,
    /// The number of the last verified one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_verified: Option<u64>,
}

impl Verifier {
    /// A verifier that checks checkpoints signed by `roots`.
    pub fn trusting(roots: Vec<Root>) -> Self {
        Verifier {
            prev: GENESIS.to_owned(),
            expected_seq: 1,
            roots,
            checkpoints: Checkpoints::default(),
        }
    }

    /// Checks the next row.
    pub fn check(&mut self, seq: u64, body: &str, hash: &str) -> Result<(), Broken> {
        let broken = |why: String| Broken { seq, why };
        if seq != self.expected_seq {
            return Err(broken(format!(
                "entry {} is missing: the next one is {seq}",
                self.expected_seq
            )));
        }
        let entry: AuditEntry = serde_json::from_str(body)
            .map_err(|err| broken(format!("the entry does not read: {err}")))?;
        if entry.seq != seq {
            return Err(broken(format!("the entry says it is number {}", entry.seq)));
        }
        if entry.prev != self.prev {
            return Err(broken(
                "the entry does not name the hash of the one before it".to_owned(),
            ));
        }
        if hash_of(&self.prev, body) != hash {
            return Err(broken(
                "the entry's content does not match its hash: it was changed".to_owned(),
            ));
        }
        if entry.action == checkpoint::ACTION {
            match checkpoint::check(&entry, &self.prev, &self.roots).map_err(broken)? {
                checkpoint::Signed::Verified => {
                    self.checkpoints.verified += 1;
                    self.checkpoints.last_verified = Some(seq);
                }
                checkpoint::Signed::UnknownSigner => self.checkpoints.unknown_signer += 1,
            }
        }
        self.prev = hash.to_owned();
        self.expected_seq += 1;
        Ok(())
    }

    /// How many rows passed.
    pub fn checked(&self) -> u64 {
        self.expected_seq - 1
    }

    /// The checkpoints among them.
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }
}

/// Rows read from the store at a time.
const PAGE: usize = 1000;

/// `GET /api/v1/audit` (entries, newest last; `since` a duration like `1h`, `action` a
/// prefix like `resource.`, `limit` the most recent N, 100 by default, 10,000 at most)
/// `GET /api/v1/audit/verify`, and `POST /api/v1/audit/checkpoint` (sign the head now).
/// Admin only: entries hold whole documents.
pub fn router(store: Arc<dyn Store>, ca: Arc<MeshCa>, checkpoints: Arc<Checkpointer>) -> Router {
    Router::new()
        .route("/api/v1/audit", get(list))
        .route("/api/v1/audit/verify", get(check_chain))
        .route("/api/v1/audit/checkpoint", post(write_checkpoint))
        .with_state(AuditApi {
            store,
            ca,
            checkpoints,
        })
}

#[derive(Clone)]
struct AuditApi {
    store: Arc<dyn Store>,
    ca: Arc<MeshCa>,
    checkpoints: Arc<Checkpointer>,
}

async fn write_checkpoint(State(api): State<AuditApi>) -> Result<Json<Value>, ApiError> {
    let written = api.checkpoints.write().await?;
    Ok(Json(json!({ "seq": written })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    since: Option<String>,
    action: Option<String>,
    /// A resource kind (`HTTPRoute`, any case): entries about resources of that kind.
    kind: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(AuditApi { store, .. }): State<AuditApi>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; the parameters are since (a duration, like 1h), action (a prefix, like \
             resource.), kind (a resource kind, like HTTPRoute) and limit",
            rejection.body_text()
        ))
    })?;
    let since = match query.since.as_deref() {
        Some(text) => {
            let ago = requested_ttl(Some(text), std::time::Duration::ZERO)?;
            let at = time::OffsetDateTime::now_utc() - ago;
            Some(at)
        }
        None => None,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    let mut kept: std::collections::VecDeque<AuditEntry> = std::collections::VecDeque::new();
    let mut rows = Rows::new(&*store);
    while let Some(page) = rows.next_page().await? {
        for (_, body, _) in &page {
            let Ok(entry) = serde_json::from_str::<AuditEntry>(body) else {
                continue;
            };
            let recent = since.is_none_or(|since| {
                time::OffsetDateTime::parse(&entry.time, &Rfc3339).is_ok_and(|at| at >= since)
            });
            let action = query
                .action
                .as_deref()
                .is_none_or(|prefix| entry.action.starts_with(prefix));
            // Resource entries name their target `Kind namespace/name`.
            let kind = query.kind.as_deref().is_none_or(|kind| {
                entry
                    .target
                    .split_once(' ')
                    .is_some_and(|(target, _)| target.eq_ignore_ascii_case(kind))
            });
            if recent && action && kind {
                if kept.len() == limit {
                    kept.pop_front();
                }
                kept.push_back(entry);
            }
        }
    }
    Ok(Json(json!({ "entries": kept })))
}

/// The log's rows from the first, a page at a time.
struct Rows<'a> {
    store: &'a dyn Store,
    from: u64,
}

impl<'a> Rows<'a> {
    fn new(store: &'a dyn Store) -> Self {
        Rows { store, from: 1 }
    }

    /// The next page; `None` after the last.
    async fn next_page(&mut self) -> Result<Option<Vec<(u64, String, String)>>, ApiError> {
        let page = self.store.audit_rows(self.from, PAGE).await?;
        let Some((last, _, _)) = page.last() else {
            return Ok(None);
        };
        self.from = last + 1;
        Ok(Some(page))
    }
}

async fn check_chain(State(api): State<AuditApi>) -> Result<Json<Value>, ApiError> {
    let (signing, retiring) = api.ca.roots();
    let mut verifier = Verifier::trusting([vec![signing], retiring].concat());
    let mut rows = Rows::new(&*api.store);
    while let Some(page) = rows.next_page().await? {
        for (seq, body, hash) in &page {
            if let Err(broken) = verifier.check(*seq, body, hash) {
                return Ok(Json(json!({
                    "intact": false,
                    "checked": verifier.checked(),
                    "checkpoints": verifier.checkpoints(),
                    "broken": broken,
                })));
            }
        }
    }
    Ok(Json(json!({
        "intact": true,
        "checked": verifier.checked(),
        "checkpoints": verifier.checkpoints(),
    })))
}

/// How many entries of one kind (refused API calls, denials proxies report) the log takes
/// a minute: a flood must not grow the store without bound or hold the disk. Beyond it,
/// events are counted, and the next entry admitted says how many were left out.
pub struct Budget {
    per_minute: u32,
    window: Mutex<Window>,
}

struct Window {
    started: Instant,
    written: u32,
    left_out: u64,
}

impl Budget {
    pub fn per_minute(per_minute: u32) -> Budget {
        Budget {
            per_minute,
            window: Mutex::new(Window {
                started: Instant::now(),
                written: 0,
                left_out: 0,
            }),
        }
    }

    /// Whether one more entry may be written now, and how many were left out in the
    /// minute before (to be said once).
    pub fn admit(&self) -> (bool, u64) {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut left_out = 0;
        if now.duration_since(window.started) >= Duration::from_secs(60) {
            left_out = std::mem::take(&mut window.left_out);
            window.started = now;
            window.written = 0;
        }
        if window.written < self.per_minute {
            window.written += 1;
            (true, left_out)
        } else {
            window.left_out += 1;
            (false, left_out)
        }
    }

    /// `record` (if admitted) and a note of what was left out before, written in the
    /// background so the caller waits for no disk. `what` names the events left out.
    pub fn write(&self, store: &Arc<dyn Store>, record: AuditRecord, what: &str) {
        let (admitted, left_out) = self.admit();
        let mut records = Vec::new();
        if left_out > 0 {
            records.push(
                AuditRecord::new(crate::store::CONTROL_PLANE, &record.action, "the audit log")
                    .detail(format!(
                        "{left_out} more {what} in the minute before were not logged"
                    )),
            );
        }
        if admitted {
            records.push(record);
        }
        if records.is_empty() {
            return;
        }
        let store = store.clone();
        tokio::spawn(async move {
            for record in records {
                self::record(&*store, record).await;
            }
        });
    }
}

/// Follows the audit log into `path`, one JSON line per entry as it is written (for a SIEM
/// or a log shipper), until the control plane stops. The file is appended to; after a
/// restart it picks up after the last entry it holds, so an entry is in it once.
pub async fn stream_to_file(store: Arc<dyn Store>, path: std::path::PathBuf) {
    use tokio::io::AsyncWriteExt;
    let mut next = last_seq_in(&path).await.map_or(1, |seq| seq + 1);
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await;
    let mut file = match file {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot open the audit file; entries stay in the store only (`weft audit log`)");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let rows = match store.audit_rows(next, PAGE).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "reading the audit log for the audit file");
                continue;
            }
        };
        for (seq, body, hash) in rows {
            let line = format!("{{\"entry\":{body},\"hash\":\"{hash}\"}}\n");
            if let Err(error) = file.write_all(line.as_bytes()).await {
                tracing::error!(path = %path.display(), %error, "writing the audit file failed; retrying");
                break;
            }
            next = seq + 1;
        }
        let _ = file.flush().await;
    }
}

/// The number of the last entry a previous run wrote to `path`.
async fn last_seq_in(path: &std::path::Path) -> Option<u64> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    let last = text.lines().rev().find(|line| !line.trim().is_empty())?;
    let line: Value = serde_json::from_str(last).ok()?;
    line["entry"]["seq"].as_u64()
}

/// Writes `record` to `store`'s audit log. A failure is logged as an error, never hidden;
/// what was done stays done (the store refusing writes refuses the change itself too).
pub async fn record(store: &dyn Store, record: AuditRecord) {
    if let Err(error) = store.audit(record).await {
        tracing::error!(%error, "could not write to the audit log");
    }
}

/// Now, as RFC 3339 UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(records: usize) -> Vec<Chained> {
        let mut head = (0, GENESIS.to_owned());
        let mut rows = Vec::new();
        for i in 0..records {
            let record = AuditRecord::new(
                "token ab12 (ci)",
                "resource.apply",
                format!("Service default/s{i}"),
            );
            let chained = chain((head.0, &head.1), record, "2026-12-06T00:00:00Z".to_owned());
            head = (chained.seq, chained.hash.clone());
            rows.push(chained);
        }
        rows
    }

    fn rows(chained: &[Chained]) -> Vec<(u64, &str, &str)> {
        chained
            .iter()
            .map(|c| (c.seq, c.body.as_str(), c.hash.as_str()))
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_any_change_names_its_entry() {
        let mut chained = log(5);
        assert_eq!(verify(rows(&chained)), Ok(5));
        // One byte of entry 3's body.
        chained[2].body = chained[2].body.replacen("s2", "s9", 1);
        let broken = verify(rows(&chained)).unwrap_err();
        assert_eq!(broken.seq, 3, "{broken:?}");
        assert!(broken.why.contains("changed"), "{broken:?}");

        // An entry removed.
        let mut chained = log(5);
        chained.remove(1);
        assert_eq!(verify(rows(&chained)).unwrap_err().seq, 3);
        // An entry rewritten whole, with a hash that fits its new body: the next one no
        // longer names it.
        let mut chained = log(5);
        let forged = chain(
            (1, &chained[0].hash),
            AuditRecord::new("someone", "resource.delete", "Service default/x"),
            "2026-12-06T00:00:00Z".to_owned(),
        );
        chained[1] = forged;
        assert_eq!(verify(rows(&chained)).unwrap_err().seq, 3);
    }
}
