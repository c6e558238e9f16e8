//! The authorization decisions proxies report, into the audit log: every report's denials
//! (how many, and the first kinds), and the decisions a `Mesh` with
//! `auditDecisionsPercent` has proxies sample one by one. Each kind of entry has its own
//! budget a minute, mesh-wide, so a flood of denials can't grow the store without bound or
//! slow it for the API.

use crate::audit::{AuditRecord, Budget};
use crate::store::Store;
use std::sync::Arc;
use weft_api::v1::{Observed, ObservedCall};

/// Report entries of each kind written a minute, mesh-wide.
const REPORTS_PER_MINUTE: u32 = 60;

pub struct AuditedDecisions {
    store: Arc<dyn Store>,
    denials: Budget,
    samples: Budget,
}

impl AuditedDecisions {
    pub fn new(store: Arc<dyn Store>) -> Self {
        AuditedDecisions {
            store,
            denials: Budget::per_minute(REPORTS_PER_MINUTE),
            samples: Budget::per_minute(REPORTS_PER_MINUTE),
        }
    }

    /// Writes what `proxy`'s report holds for the log, in the background.
    pub fn report(&self, proxy: &str, observed: &Observed) {
        if let Some(record) = denials(proxy, observed) {
            self.denials
                .write(&self.store, record, "authorization denial reports");
        }
        if let Some(record) = sampled(proxy, observed) {
            self.samples
                .write(&self.store, record, "sampled decision reports");
        }
    }
}

/// One audit entry for the authorization denials in a proxy's report: how many, and the
/// first few calls denied.
fn denials(proxy: &str, observed: &Observed) -> Option<AuditRecord> {
    let denied: Vec<&ObservedCall> = observed.calls.iter().filter(|c| c.denied > 0).collect();
    let total: u64 = denied.iter().map(|c| c.denied).sum::<u64>() + observed.denied_left_out;
    if total == 0 {
        return None;
    }
    let shown: Vec<String> = denied
        .iter()
        .take(10)
        .map(|c| {
            let source = if c.source.is_empty() {
                "plain text"
            } else {
                &c.source
            };
            format!("{source} {} {} x{}", c.method, c.path, c.denied)
        })
        .collect();
    let mut detail = format!("{total} calls denied: {}", shown.join("; "));
    let more = denied.len().saturating_sub(shown.len());
    if more > 0 {
        detail.push_str(&format!("; and {more} more kinds"));
    }
    if observed.denied_left_out > 0 {
        detail.push_str(&format!(
            "; {} of them beyond the proxy's cap of distinct calls, not itemized",
            observed.denied_left_out
        ));
    }
    Some(
        AuditRecord::new(
            &format!("proxy {proxy}"),
            "authz.denied",
            proxy.split('@').next().unwrap_or(proxy).to_owned(),
        )
        .detail(detail),
    )
}

/// One audit entry for the decisions a proxy sampled: each with its time, caller,
/// operation, decision and the policy and rule that made it.
fn sampled(proxy: &str, observed: &Observed) -> Option<AuditRecord> {
    if observed.sampled.is_empty() {
        return None;
    }
    let decisions: Vec<serde_json::Value> = observed
        .sampled
        .iter()
        .map(|d| {
            let time = time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(d.unix_millis) * 1_000_000,
            )
            .ok()
            .and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
            serde_json::json!({
                "time": time,
                "source": if d.source.is_empty() { "plain text" } else { &d.source },
                "method": d.method,
                "path": d.path,
                "decision": d.decision,
                "policy": d.policy,
                "rule": d.rule,
            })
        })
        .collect();
    let mut detail = format!("{} decisions sampled", decisions.len());
    if observed.sampled_left_out > 0 {
        detail.push_str(&format!(
            "; {} more sampled but over the proxy's cap",
            observed.sampled_left_out
        ));
    }
    let mut record = AuditRecord::new(
        &format!("proxy {proxy}"),
        "authz.sampled",
        proxy.split('@').next().unwrap_or(proxy).to_owned(),
    )
    .detail(detail);
    record.after = Some(serde_json::Value::Array(decisions));
    Some(record)
}
