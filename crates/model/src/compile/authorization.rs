//! AuthorizationPolicy resources -> the `AuthzPolicy` list of the Service they target.

use crate::authz::{
    AuthzAction, AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource, Pattern,
};
use crate::catalog::{Catalog, ServiceKey};
use crate::resources::{
    AuthorizationAction, AuthorizationMode, AuthorizationPolicySpec, AuthorizationRule, Resource,
    Source,
};

/// The policies targeting `service`, ordered by namespace and name, so every proxy and
/// `weft explain` see the same order whatever order they were applied in.
pub(super) fn compile(catalog: &Catalog, service: ServiceKey) -> Vec<AuthzPolicy> {
    let Some(targeting) = catalog.authorizations.get(&service) else {
        return Vec::new();
    };
    let mut policies: Vec<AuthzPolicy> = targeting
        .iter()
        .map(|(resource, spec)| policy(resource, spec))
        .collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    policies
}

fn policy(resource: &Resource, spec: &AuthorizationPolicySpec) -> AuthzPolicy {
    let namespace = resource.metadata.namespace.as_str();
    AuthzPolicy {
        name: format!("{namespace}/{}", resource.metadata.name),
        action: match spec.action {
            AuthorizationAction::Allow => AuthzAction::Allow,
            AuthorizationAction::Deny => AuthzAction::Deny,
            AuthorizationAction::Audit => AuthzAction::Audit,
        },
        dry_run: spec.mode == AuthorizationMode::DryRun,
        port: spec.target_ref.port.map(|p| p.get()),
        rules: spec.rules.iter().map(|r| rule(r, namespace)).collect(),
    }
}

fn rule(rule: &AuthorizationRule, namespace: &str) -> AuthzRule {
    AuthzRule {
        from: rule.from.iter().map(|s| source(s, namespace)).collect(),
        to: rule
            .to
            .iter()
            .map(|op| AuthzOperation {
                methods: op.methods.iter().map(ToString::to_string).collect(),
                paths: op
                    .paths
                    .iter()
                    .map(|p| Pattern::parse(p.as_str()))
                    .collect(),
                ports: op.ports.iter().map(|p| p.get()).collect(),
            })
            .collect(),
        when: rule
            .when
            .iter()
            .map(|c| AuthzCondition {
                header: c.header.to_string(),
                values: c.values.clone(),
            })
            .collect(),
    }
}

/// Services are named in the policy's namespace unless `namespaces` says where: each is
/// paired with each namespace, so the proxy compares whole names.
fn source(source: &Source, namespace: &str) -> AuthzSource {
    let namespaces: Vec<String> = source.namespaces.iter().map(ToString::to_string).collect();
    let services = if source.namespaces.is_empty() {
        source
            .services
            .iter()
            .map(|name| (namespace.to_owned(), name.to_string()))
            .collect()
    } else {
        namespaces
            .iter()
            .flat_map(|ns| {
                source
                    .services
                    .iter()
                    .map(|name| (ns.clone(), name.to_string()))
            })
            .collect()
    };
    AuthzSource {
        identities: source
            .identities
            .iter()
            .map(|id| Pattern::parse(id.as_str()))
            .collect(),
        namespaces: if source.services.is_empty() {
            namespaces
        } else {
            Vec::new()
        },
        services,
        unauthenticated: source.unauthenticated,
    }
}
