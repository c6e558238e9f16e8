//! Inbound authorization: each TCP connection (L4) and each HTTP or gRPC request (L7) from
//! the mesh is judged against the policies of this proxy's own Service, by the judgment in
//! `weft_model::authz` that `weft explain` runs too; counted, logged, and a denied request
//! answered 403 (gRPC: `PERMISSION_DENIED`) naming the policy, never its rules.

use crate::body::Body;
use crate::inbound::Caller;
use crate::proxy::Proxy;
use crate::state::Snapshot;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use std::sync::Arc;
use weft_model::authz::{
    self, called_port, AuthzIndex, AuthzPolicy, Call, Cause, Judgment, RuleRef,
};
use weft_model::config::{ProxyConfig, ServiceConfig};

/// The header of a denied answer that names the policy (or `mesh` for the default).
pub const DENIED_BY_HEADER: &str = "x-weft-denied-by";

/// This proxy's own Service's policies, and their `policy` labels, made once per snapshot
/// so judging a call allocates nothing.
pub struct OwnPolicies {
    /// Index of this proxy's Service in the config.
    at: Option<usize>,
    /// Which of its rules each caller can match.
    index: AuthzIndex,
    labels: Box<[Arc<str>]>,
    mesh: Arc<str>,
}

impl OwnPolicies {
    pub fn new(config: &ProxyConfig, own: Option<usize>) -> Self {
        let policies: &[AuthzPolicy] = own.map_or(&[], |at| &config.services[at].authorization);
        OwnPolicies {
            at: own,
            index: AuthzIndex::new(policies),
            labels: policies
                .iter()
                .map(|policy| Arc::from(policy.name.as_str()))
                .collect(),
            mesh: Arc::from("mesh"),
        }
    }

    fn label(&self, policies: &[AuthzPolicy], cause: &Cause) -> Arc<str> {
        let at = cause
            .policy
            .and_then(|p| policies.iter().position(|q| std::ptr::eq(p, q)));
        at.map_or_else(|| self.mesh.clone(), |at| self.labels[at].clone())
    }
}

/// What was decided, as metrics, the access log and a denied answer tell it.
pub struct Verdict {
    pub allowed: bool,
    /// `allow`, `deny`, `dry_run_deny` (allowed; a dry-run policy would have denied) or
    /// `audit` (allowed; an AUDIT policy matched).
    pub decision: &'static str,
    pub policy: Arc<str>,
    pub rule: RuleRef,
}

/// Request headers as the judgment looks them up.
struct RequestHeaders<'a>(&'a HeaderMap);

impl authz::Headers for RequestHeaders<'_> {
    fn has(&self, name: &str, value: &str) -> bool {
        self.0
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    }
}

/// Judges an inbound request; counts the decision.
pub fn judge_request<B>(
    proxy: &Proxy,
    snapshot: &Snapshot,
    caller: &Caller,
    request: &http::Request<B>,
) -> Verdict {
    let headers = RequestHeaders(request.headers());
    let verdict = judge(
        proxy,
        snapshot,
        &request_call(snapshot, caller, request, &headers),
        Record::Every,
    );
    if let Some(observed) = &proxy.observed {
        observed.record(
            caller.identity_uri(),
            request.method().as_str(),
            request.uri().path(),
            &verdict,
            snapshot.config.audit_decisions_percent,
        );
    }
    verdict
}

/// Whether a request whose tunnel (WebSocket, CONNECT) is open is still allowed under
/// `snapshot` (after a push). Only a denial is counted, as for a TCP connection.
pub fn request_still_allowed<B>(
    proxy: &Proxy,
    snapshot: &Snapshot,
    caller: &Caller,
    request: &http::Request<B>,
) -> bool {
    let headers = RequestHeaders(request.headers());
    let call = request_call(snapshot, caller, request, &headers);
    judge(proxy, snapshot, &call, Record::Denials).allowed
}

fn request_call<'a, B>(
    snapshot: &Snapshot,
    caller: &'a Caller,
    request: &'a http::Request<B>,
    headers: &'a RequestHeaders<'a>,
) -> Call<'a> {
    let named = request.uri().port_u16().or_else(|| {
        let host = request.headers().get(http::header::HOST)?.to_str().ok()?;
        host.rsplit_once(':')?.1.parse().ok()
    });
    Call {
        caller: caller.authz(),
        port: called_port(own_service(snapshot), named, false),
        request: Some(authz::Request {
            method: request.method().as_str(),
            path: request.uri().path(),
            headers,
        }),
    }
}

/// Resolves when a config applied after `applied` was subscribed no longer passes
/// `allowed`; never if none does. What closes an open TCP connection or tunnel, which has
/// no next request to judge. Subscribe before the first judgment, so a config applied
/// between it and this wait is not missed.
pub async fn until_revoked(
    proxy: &Proxy,
    mut applied: tokio::sync::watch::Receiver<u64>,
    allowed: impl Fn(&Snapshot) -> bool,
) -> &'static str {
    loop {
        if applied.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !allowed(&proxy.snapshot()) {
            return "closed: authorization no longer allows this connection";
        }
    }
}

/// Judges an inbound TCP connection (the app's port is opaque); counts the decision.
pub fn judge_connection(proxy: &Proxy, snapshot: &Snapshot, caller: &Caller) -> Verdict {
    let verdict = judge(
        proxy,
        snapshot,
        &connection(snapshot, caller),
        Record::Every,
    );
    if let Some(observed) = &proxy.observed {
        observed.record(
            caller.identity_uri(),
            "",
            "",
            &verdict,
            snapshot.config.audit_decisions_percent,
        );
    }
    verdict
}

/// Whether an open TCP connection is still allowed under `snapshot` (after a push). Only
/// a denial is counted: the connection was counted when it was allowed first.
pub fn still_allowed(proxy: &Proxy, snapshot: &Snapshot, caller: &Caller) -> bool {
    judge(
        proxy,
        snapshot,
        &connection(snapshot, caller),
        Record::Denials,
    )
    .allowed
}

fn connection<'a>(snapshot: &Snapshot, caller: &'a Caller) -> Call<'a> {
    Call {
        caller: caller.authz(),
        port: called_port(own_service(snapshot), None, true),
        request: None,
    }
}

/// Which decisions a judgment counts.
#[derive(Clone, Copy, PartialEq)]
enum Record {
    Every,
    Denials,
}

fn own_service(snapshot: &Snapshot) -> Option<&ServiceConfig> {
    snapshot.policies.at.map(|at| &snapshot.config.services[at])
}

fn judge(proxy: &Proxy, snapshot: &Snapshot, call: &Call, record: Record) -> Verdict {
    let policies: &[AuthzPolicy] = own_service(snapshot).map_or(&[], |s| &s.authorization);
    let own = &snapshot.policies;
    let judgment: Judgment = authz::judge(
        policies,
        &own.index,
        snapshot.config.default_authorization,
        call,
    );
    let count = |decision: &'static str, cause: &Cause| {
        let label = own.label(policies, cause);
        if record == Record::Every || decision == "deny" {
            proxy.metrics.authz_decision(decision, &label, cause.rule);
        }
        label
    };
    let decision = if judgment.allowed { "allow" } else { "deny" };
    let decided = count(decision, &judgment.cause);
    let mut verdict = Verdict {
        allowed: judgment.allowed,
        decision,
        policy: decided,
        rule: judgment.cause.rule,
    };
    // The access log shows the most telling of what was recorded: a denial, else what a
    // dry run would have denied, else what an audit matched.
    if let Some(cause) = &judgment.audited {
        let label = count("audit", cause);
        if verdict.allowed {
            (verdict.decision, verdict.policy, verdict.rule) = ("audit", label, cause.rule);
        }
    }
    if let Some(cause) = &judgment.would_deny {
        let label = count("dry_run_deny", cause);
        (verdict.decision, verdict.policy, verdict.rule) = ("dry_run_deny", label, cause.rule);
    }
    if !verdict.allowed {
        tracing::debug!(source = %caller_label(call), policy = %verdict.policy, rule = %verdict.rule, "call denied");
    }
    verdict
}

fn caller_label(call: &Call) -> String {
    match call.caller {
        authz::Caller::Mesh { identity, .. } => identity.to_owned(),
        authz::Caller::Unauthenticated => "unauthenticated".to_owned(),
    }
}

impl Verdict {
    /// The answer to a denied request: 403, or `PERMISSION_DENIED` (7) for gRPC, with the
    /// policy named in a header and the body so the caller knows whom to ask.
    pub fn denied_response(&self, grpc: bool) -> Response<Body> {
        let reason = format!("denied by authorization policy {}", self.policy);
        let mut response = if grpc {
            let mut response = Response::new(Body::full(bytes::Bytes::new()));
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from_static("7"));
            if let Ok(message) = HeaderValue::try_from(&reason) {
                headers.insert("grpc-message", message);
            }
            response
        } else {
            crate::http::synthetic(StatusCode::FORBIDDEN, &reason)
        };
        if let Ok(policy) = HeaderValue::try_from(&*self.policy) {
            response.headers_mut().insert(DENIED_BY_HEADER, policy);
        }
        response
    }
}
