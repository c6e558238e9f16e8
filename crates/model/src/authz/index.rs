//! Which rules a caller can match at all, so a call is judged against those and not every
//! rule of every policy: a Service with 100 policies of 10 rules costs a few lookups, not a
//! thousand rule checks. Built once per config; the candidates come out in policy and rule
//! order, so the first match is the one the plain scan would find.

use super::judge::Caller;
use super::{AuthzAction, AuthzPolicy, AuthzSource, Pattern};
use std::collections::HashMap;

/// A rule, by policy index then rule index: the order rules are judged in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RuleId {
    pub policy: u32,
    pub rule: u32,
}

#[derive(Debug, Default)]
pub struct AuthzIndex {
    /// namespace -> service -> rules with a source naming that service.
    by_service: HashMap<String, HashMap<String, Vec<RuleId>>>,
    /// namespace -> rules with a source naming the namespace (and no service).
    by_namespace: HashMap<String, Vec<RuleId>>,
    /// SPIFFE id -> rules with a source naming exactly that id (and no service, no
    /// namespace).
    by_identity: HashMap<String, Vec<RuleId>>,
    /// Rules any caller may match: no `from`, a source with a wildcard id, no field, or
    /// `unauthenticated`.
    any: Vec<RuleId>,
    /// Dry-run policies (not `AUDIT`), by index: judged again only when there are some.
    pub(super) dry_runs: Vec<u32>,
    /// Whether any policy is an `AUDIT`.
    pub(super) audits: bool,
    /// How many policies it was built from (a guard against judging with another list).
    policies: usize,
}

/// Where a source's rule is filed.
enum Bucket<'a> {
    Services(&'a [(String, String)]),
    Namespaces(&'a [String]),
    Identities(&'a [Pattern]),
    Any,
}

fn bucket(source: &AuthzSource) -> Bucket<'_> {
    let exact_ids = !source.identities.is_empty()
        && source
            .identities
            .iter()
            .all(|p| matches!(p, Pattern::Exact(_)));
    if source.unauthenticated {
        Bucket::Any
    } else if !source.services.is_empty() {
        Bucket::Services(&source.services)
    } else if !source.namespaces.is_empty() {
        Bucket::Namespaces(&source.namespaces)
    } else if exact_ids {
        Bucket::Identities(&source.identities)
    } else {
        Bucket::Any
    }
}

impl AuthzIndex {
    pub fn new(policies: &[AuthzPolicy]) -> AuthzIndex {
        let mut index = AuthzIndex {
            policies: policies.len(),
            ..AuthzIndex::default()
        };
        for (p, policy) in policies.iter().enumerate() {
            match policy.action {
                AuthzAction::Audit => index.audits = true,
                _ if policy.dry_run => index.dry_runs.push(p as u32),
                _ => {}
            }
            for (r, rule) in policy.rules.iter().enumerate() {
                let id = RuleId {
                    policy: p as u32,
                    rule: r as u32,
                };
                let buckets: Vec<Bucket> = rule.from.iter().map(bucket).collect();
                if buckets.is_empty() || buckets.iter().any(|b| matches!(b, Bucket::Any)) {
                    index.any.push(id);
                    continue;
                }
                for bucket in buckets {
                    match bucket {
                        Bucket::Services(services) => {
                            for (namespace, name) in services {
                                let by_name =
                                    index.by_service.entry(namespace.clone()).or_default();
                                push_once(by_name.entry(name.clone()).or_default(), id);
                            }
                        }
                        Bucket::Namespaces(namespaces) => {
                            for namespace in namespaces {
                                push_once(
                                    index.by_namespace.entry(namespace.clone()).or_default(),
                                    id,
                                );
                            }
                        }
                        Bucket::Identities(identities) => {
                            for identity in identities {
                                if let Pattern::Exact(id_text) = identity {
                                    push_once(
                                        index.by_identity.entry(id_text.clone()).or_default(),
                                        id,
                                    );
                                }
                            }
                        }
                        Bucket::Any => unreachable!("filed in `any` above"),
                    }
                }
            }
        }
        index
    }

    /// Whether it was built from a list of `policies` policies.
    pub(super) fn fits(&self, policies: usize) -> bool {
        self.policies == policies
    }

    /// The rules `caller` can match, in judging order, each once.
    pub(super) fn candidates<'a>(&'a self, caller: &Caller) -> Candidates<'a> {
        let empty: &[RuleId] = &[];
        let lists = match *caller {
            Caller::Mesh {
                identity,
                namespace,
                service,
            } => [
                self.by_service
                    .get(namespace)
                    .and_then(|by_name| by_name.get(service))
                    .map_or(empty, Vec::as_slice),
                self.by_namespace
                    .get(namespace)
                    .map_or(empty, Vec::as_slice),
                self.by_identity.get(identity).map_or(empty, Vec::as_slice),
                &self.any,
            ],
            Caller::Unauthenticated => [empty, empty, empty, &self.any],
        };
        Candidates { lists, last: None }
    }
}

/// Rule lists are built in order; a rule with two sources naming one caller is filed once.
fn push_once(list: &mut Vec<RuleId>, id: RuleId) {
    if list.last() != Some(&id) {
        list.push(id);
    }
}

/// Four sorted lists merged, without duplicates and without allocating.
pub(super) struct Candidates<'a> {
    lists: [&'a [RuleId]; 4],
    last: Option<RuleId>,
}

impl Iterator for Candidates<'_> {
    type Item = RuleId;

    fn next(&mut self) -> Option<RuleId> {
        loop {
            let (at, next) = self
                .lists
                .iter()
                .enumerate()
                .filter_map(|(at, list)| list.first().map(|id| (at, *id)))
                .min_by_key(|(_, id)| *id)?;
            self.lists[at] = &self.lists[at][1..];
            if self.last != Some(next) {
                self.last = Some(next);
                return Some(next);
            }
        }
    }
}
