//! `weft diagnose`: what changed. Each edge and route's last 10 to 20 seconds are set against
//! its own 10 minutes before, and the proxies' own reports looked at; what stands out is
//! named, with the numbers, ranked by how bad and how much traffic it touches:
//!
//! - success rate fallen (or low, for an edge with no past), p99 risen;
//! - an edge that took no traffic before and takes some now (a new version, a new caller);
//! - authorization denials or retries rising;
//! - proxies failing their app's health check (out of rotation), certificates near expiry.

use super::{Changes, Counts, Recent};
use crate::discovery::ProxyInfo;
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

/// Fewer requests than this in the last seconds say nothing.
const MIN_REQUESTS: u64 = 5;
/// A success rate this far under its past (or under 95 % with no past) is a finding.
const SUCCESS_DROP: f64 = 0.05;
/// A p99 this many times its past, and this much more, is a finding.
const P99_FACTOR: f64 = 2.0;
const P99_MIN_RISE_MS: f64 = 5.0;
/// The mesh must have reported this long before an edge counts as new.
const NEW_AFTER_SECS: u64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub severity: Severity,
    /// The Service it is about, `name.namespace`.
    pub service: String,
    pub summary: String,
    /// The numbers behind it.
    pub evidence: String,
    /// What to look at next.
    pub hint: String,
    /// Requests a second it touches: ranks findings of one severity.
    pub rps: f64,
}

/// Every finding, worst first; only those about `service` (`name.namespace`) if given.
pub fn diagnose(
    changes: &Changes,
    proxies: &[ProxyInfo],
    service: Option<&str>,
    now: u64,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for ((source, destination), recent) in &changes.edges {
        edge(
            &mut findings,
            source,
            destination,
            recent,
            changes.started,
            now,
        );
    }
    for ((destination, route), recent) in &changes.routes {
        retries(&mut findings, destination, route, recent);
    }
    for proxy in proxies {
        fleet(&mut findings, proxy, now);
    }
    findings.retain(|f| service.is_none_or(|s| f.service == s));
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.rps.total_cmp(&a.rps))
            .then_with(|| a.service.cmp(&b.service))
    });
    findings
}

fn success(counts: &Counts) -> f64 {
    1.0 - counts.server_errors.min(counts.requests) as f64 / counts.requests as f64
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn edge(
    findings: &mut Vec<Finding>,
    source: &str,
    destination: &str,
    recent: &Recent,
    started: u64,
    now: u64,
) {
    let (latest, before) = (&recent.latest, &recent.before);
    if latest.requests < MIN_REQUESTS {
        return;
    }
    let rps = latest.requests as f64 / recent.latest_secs;
    let edge = format!("{source} → {destination}");
    let window = format!("the last {:.0} s", recent.latest_secs);
    let past = before.requests >= MIN_REQUESTS;
    let finding = |severity, summary: String, evidence: String, hint: String| Finding {
        severity,
        service: destination.to_owned(),
        summary,
        evidence,
        hint,
        rps,
    };

    let now_success = success(latest);
    let fell = if past {
        now_success < success(before) - SUCCESS_DROP
    } else {
        now_success < 1.0 - SUCCESS_DROP
    };
    if fell {
        let summary = if past {
            format!(
                "{edge}: success rate fell from {} to {}",
                percent(success(before)),
                percent(now_success)
            )
        } else {
            format!("{edge}: success rate is {}", percent(now_success))
        };
        findings.push(finding(
            Severity::Error,
            summary,
            format!(
                "{} of {} requests failed (5xx or a gRPC error) in {window}; {} of {} in the {:.0} s before",
                latest.server_errors,
                latest.requests,
                before.server_errors,
                before.requests,
                recent.before_secs
            ),
            format!(
                "`weft stat svc/{}` and the access log of {destination}'s proxies show which \
                 answers fail; `weft proxies` shows whether its endpoints are healthy",
                destination.split('.').next().unwrap_or(destination)
            ),
        ));
    }

    if let (true, Some(now_p99), Some(past_p99)) =
        (past, latest.latency_ms(0.99), before.latency_ms(0.99))
    {
        if now_p99 > past_p99 * P99_FACTOR && now_p99 - past_p99 > P99_MIN_RISE_MS {
            findings.push(finding(
                Severity::Warning,
                format!(
                    "{edge}: p99 latency rose from {} to {}",
                    millis(past_p99),
                    millis(now_p99)
                ),
                format!(
                    "p50 {} and p99 {} over {} requests in {window}; p50 {} and p99 {} before",
                    millis(latest.latency_ms(0.5).unwrap_or_default()),
                    millis(now_p99),
                    latest.requests,
                    millis(before.latency_ms(0.5).unwrap_or_default()),
                    millis(past_p99)
                ),
                format!(
                    "{destination} answers slower: a new version, a slow dependency or a \
                     saturated endpoint (`weft stat edges` shows which of its callers and \
                     callees slowed too)"
                ),
            ));
        }
    }

    let mesh_has_a_past = started > 0 && now.saturating_sub(started) >= NEW_AFTER_SECS;
    if mesh_has_a_past && before.requests == 0 && recent.since + 30 >= now {
        findings.push(finding(
            Severity::Info,
            format!("{edge}: a new edge takes traffic"),
            format!(
                "{} requests in {window}, none in the minutes before",
                latest.requests
            ),
            format!(
                "expected after a rollout or a route change (a new version of {destination}); \
                 `weft explain --from {} --to {}` shows the route that sends it",
                source.split('.').next().unwrap_or(source),
                destination.split('.').next().unwrap_or(destination)
            ),
        ));
    }

    let rate = |counts: &Counts, secs: f64| counts.denied as f64 / secs.max(1.0);
    let denied_now = rate(latest, recent.latest_secs);
    if latest.denied >= MIN_REQUESTS && denied_now > 2.0 * rate(before, recent.before_secs) {
        findings.push(finding(
            Severity::Warning,
            format!("{edge}: authorization denials rose"),
            format!(
                "{} of {} requests denied in {window}; {} in the {:.0} s before",
                latest.denied, latest.requests, before.denied, recent.before_secs
            ),
            format!(
                "a policy changed, or the caller did: `weft audit log --action authz.denied` \
                 names the calls, `weft explain --from {} --to {}` the rule",
                source.split('.').next().unwrap_or(source),
                destination.split('.').next().unwrap_or(destination)
            ),
        ));
    }
}

fn retries(findings: &mut Vec<Finding>, destination: &str, route: &str, recent: &Recent) {
    let (latest, before) = (&recent.latest, &recent.before);
    let rate = |counts: &Counts, secs: f64| counts.retries as f64 / secs.max(1.0);
    if latest.retries >= MIN_REQUESTS
        && rate(latest, recent.latest_secs) > 2.0 * rate(before, recent.before_secs)
    {
        findings.push(Finding {
            severity: Severity::Warning,
            service: destination.to_owned(),
            summary: format!("{destination} route {route}: retries rose"),
            evidence: format!(
                "{} retries for {} requests in the last {:.0} s; {} in the {:.0} s before",
                latest.retries,
                latest.requests,
                recent.latest_secs,
                before.retries,
                recent.before_secs
            ),
            hint: "retries hide failures until their budget runs out: look at the success rate \
                   of the route's backends (`weft stat edges`)"
                .to_owned(),
            rps: latest.requests as f64 / recent.latest_secs,
        });
    }
}

fn fleet(findings: &mut Vec<Finding>, proxy: &ProxyInfo, now: u64) {
    let service = format!("{}.{}", proxy.service, proxy.namespace);
    if !proxy.healthy {
        findings.push(Finding {
            severity: Severity::Error,
            service: service.clone(),
            summary: format!(
                "{service}: the endpoint at {} is out of rotation: its app fails its health check",
                proxy.inbound_address
            ),
            evidence: format!("proxy {}: {}", proxy.id, proxy.health_detail),
            hint: "the app behind this proxy is down or unready; its proxy's log and `weft \
                   proxies` say since when"
                .to_owned(),
            rps: 0.0,
        });
    }
    if let Some(certificate) = &proxy.certificate {
        let expires = certificate
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |at| at.as_secs());
        let left = Duration::from_secs(expires.saturating_sub(now));
        if left < crate::fleet::CERTIFICATE_WARNING {
            findings.push(Finding {
                severity: if left.is_zero() {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                service,
                summary: format!(
                    "proxy {}: its certificate expires in {} s",
                    proxy.id,
                    left.as_secs()
                ),
                evidence: format!(
                    "not after {}",
                    weft_identity::format_utc(certificate.not_after)
                ),
                hint: "it should have renewed at half its lifetime: its log says why it could \
                       not (control plane unreachable, certificate no longer trusted)"
                    .to_owned(),
                rps: 0.0,
            });
        }
    }
}
