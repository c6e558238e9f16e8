//! Judging one call against a Service's policies: any matching `DENY` denies; when an
//! `ALLOW` applies, a call none allows is denied; otherwise the mesh default decides.
//! Dry-run policies are judged as if enforced and recorded when they would deny; `AUDIT`
//! policies record the calls they match.

use super::index::AuthzIndex;
use super::{
    AuthzAction, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource, DefaultAuthorization,
};
use std::fmt;

/// Who is calling.
#[derive(Clone, Copy, Debug)]
pub enum Caller<'a> {
    /// A peer proxy, by the SPIFFE id its certificate proves.
    Mesh {
        identity: &'a str,
        namespace: &'a str,
        service: &'a str,
    },
    /// Plain text (permissive mode), or a proxy without identities.
    Unauthenticated,
}

/// A request's headers, looked up without copying.
pub trait Headers {
    /// Whether header `name` (lower-case) has the value `value`.
    fn has(&self, name: &str, value: &str) -> bool;
}

/// What an HTTP or gRPC request asks for.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// Upper-case.
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a dyn Headers,
}

/// One connection (L4: `request` is `None`) or one request (L7).
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub caller: Caller<'a>,
    /// The Service port called.
    pub port: u16,
    pub request: Option<Request<'a>>,
}

/// Which rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleRef {
    /// The rule at this index of the policy's `rules`.
    Rule(usize),
    /// The policy is the first `ALLOW` that applies, and none allowed the call.
    NoAllowMatched,
    /// No policy decided: the mesh default did.
    MeshDefault,
}

/// Written as its label: `0`, `none`, `default`.
impl serde::Serialize for RuleRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            RuleRef::Rule(index) => write!(f, "{index}"),
            RuleRef::NoAllowMatched => f.write_str("none"),
            RuleRef::MeshDefault => f.write_str("default"),
        }
    }
}

/// A decision and what made it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cause<'p> {
    /// `None` for the mesh default.
    pub policy: Option<&'p AuthzPolicy>,
    pub rule: RuleRef,
}

impl Cause<'_> {
    /// The policy's `<namespace>/<name>`, or `mesh` for the mesh default.
    pub fn policy_name(&self) -> &str {
        self.policy.map_or("mesh", |p| p.name.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgment<'p> {
    pub allowed: bool,
    pub cause: Cause<'p>,
    /// A dry-run policy that would have denied this allowed call.
    pub would_deny: Option<Cause<'p>>,
    /// The `AUDIT` policy and rule that matched the call.
    pub audited: Option<Cause<'p>>,
}

/// Judges `call` against the policies of the Service called, with `index` built from
/// them ([`AuthzIndex::new`]).
pub fn judge<'p>(
    policies: &'p [AuthzPolicy],
    index: &AuthzIndex,
    default: DefaultAuthorization,
    call: &Call,
) -> Judgment<'p> {
    debug_assert!(index.fits(policies.len()), "an index of other policies");
    if policies.is_empty() {
        // Most Services: nothing to look up.
        return Judgment {
            allowed: default.is_allow(),
            cause: Cause {
                policy: None,
                rule: RuleRef::MeshDefault,
            },
            would_deny: None,
            audited: None,
        };
    }
    let set = Set { policies, index };
    let enforced = |p: &AuthzPolicy| !p.dry_run && p.action != AuthzAction::Audit;
    let (allowed, cause) = set.decide(default, call, enforced);
    let would_deny = if allowed {
        index.dry_runs.iter().find_map(|&at| {
            let trial = &policies[at as usize];
            if !applies(trial, call) {
                return None;
            }
            let (allowed, cause) =
                set.decide(default, call, |p| enforced(p) || std::ptr::eq(p, trial));
            (!allowed).then_some(cause)
        })
    } else {
        None
    };
    let audited = if index.audits {
        set.first_match(call, |p| p.action == AuthzAction::Audit)
    } else {
        None
    };
    Judgment {
        allowed,
        cause,
        would_deny,
        audited,
    }
}

/// One policy as judged for a call, for `weft explain`: whether it applies (its port), and
/// which of its rules match.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyTrace<'p> {
    pub policy: &'p AuthzPolicy,
    pub applies: bool,
    /// Indexes of the rules that match the call.
    pub matching_rules: Vec<usize>,
}

/// Every policy of the Service as judged for `call`, in the order [`judge`] takes them.
pub fn trace<'p>(policies: &'p [AuthzPolicy], call: &Call) -> Vec<PolicyTrace<'p>> {
    policies
        .iter()
        .map(|policy| {
            let unknown_matches = policy.action == AuthzAction::Deny;
            PolicyTrace {
                policy,
                applies: applies(policy, call),
                matching_rules: policy
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, rule)| rule_matches(rule, call, unknown_matches))
                    .map(|(index, _)| index)
                    .collect(),
            }
        })
        .collect()
}

/// Policies and their index, judged together.
struct Set<'p, 'i> {
    policies: &'p [AuthzPolicy],
    index: &'i AuthzIndex,
}

impl<'p> Set<'p, '_> {
    /// The decision of the policies `counted` picks out.
    fn decide(
        &self,
        default: DefaultAuthorization,
        call: &Call,
        counted: impl Fn(&AuthzPolicy) -> bool,
    ) -> (bool, Cause<'p>) {
        let in_force = |p: &AuthzPolicy| counted(p) && applies(p, call);
        let deny = self.first_match(call, |p| p.action == AuthzAction::Deny && in_force(p));
        if let Some(cause) = deny {
            return (false, cause);
        }
        let allow = self.first_match(call, |p| p.action == AuthzAction::Allow && in_force(p));
        if let Some(cause) = allow {
            return (true, cause);
        }
        let first_allow = self
            .policies
            .iter()
            .find(|p| p.action == AuthzAction::Allow && in_force(p));
        if let Some(policy) = first_allow {
            let cause = Cause {
                policy: Some(policy),
                rule: RuleRef::NoAllowMatched,
            };
            return (false, cause);
        }
        let cause = Cause {
            policy: None,
            rule: RuleRef::MeshDefault,
        };
        (default.is_allow(), cause)
    }

    /// The first rule, in policy and rule order, of a policy `chosen` picks out that
    /// matches `call`: only the rules the caller can match are looked at.
    fn first_match(&self, call: &Call, chosen: impl Fn(&AuthzPolicy) -> bool) -> Option<Cause<'p>> {
        self.index.candidates(&call.caller).find_map(|id| {
            let policy = &self.policies[id.policy as usize];
            let rule = &policy.rules[id.rule as usize];
            // A connection can't show what only a request has (methods, paths, headers).
            // Judged at L4, a DENY rule that names them matches (it fails closed); any
            // other does not.
            let unknown_matches = policy.action == AuthzAction::Deny;
            (chosen(policy) && applies(policy, call) && rule_matches(rule, call, unknown_matches))
                .then_some(Cause {
                    policy: Some(policy),
                    rule: RuleRef::Rule(id.rule as usize),
                })
        })
    }
}

fn applies(policy: &AuthzPolicy, call: &Call) -> bool {
    policy.port.is_none_or(|port| port == call.port)
}

fn rule_matches(rule: &AuthzRule, call: &Call, unknown_matches: bool) -> bool {
    // Cheapest first, and stop at the first condition that fails.
    let from = || rule.from.is_empty() || rule.from.iter().any(|s| source_matches(s, &call.caller));
    let to = || {
        rule.to.is_empty()
            || rule
                .to
                .iter()
                .any(|op| operation_matches(op, call, unknown_matches))
    };
    let when = || {
        rule.when.iter().all(|condition| match &call.request {
            Some(request) => condition
                .values
                .iter()
                .any(|value| request.headers.has(&condition.header, value)),
            None => unknown_matches,
        })
    };
    from() && to() && when()
}

fn source_matches(source: &AuthzSource, caller: &Caller) -> bool {
    match *caller {
        Caller::Unauthenticated => {
            source.unauthenticated
                || (source.identities.is_empty()
                    && source.services.is_empty()
                    && source.namespaces.is_empty())
        }
        Caller::Mesh {
            identity,
            namespace,
            service,
        } => {
            !source.unauthenticated
                && (source.identities.is_empty()
                    || source.identities.iter().any(|p| p.matches(identity)))
                && (source.services.is_empty()
                    || source
                        .services
                        .iter()
                        .any(|(ns, name)| ns == namespace && name == service))
                && (source.namespaces.is_empty()
                    || source.namespaces.iter().any(|ns| ns == namespace))
        }
    }
}

fn operation_matches(op: &AuthzOperation, call: &Call, unknown_matches: bool) -> bool {
    let port = op.ports.is_empty() || op.ports.contains(&call.port);
    let request_part = match &call.request {
        Some(request) => {
            (op.methods.is_empty() || op.methods.iter().any(|m| m == request.method))
                && (op.paths.is_empty() || op.paths.iter().any(|p| p.matches(request.path)))
        }
        None => unknown_matches || (op.methods.is_empty() && op.paths.is_empty()),
    };
    port && request_part
}
