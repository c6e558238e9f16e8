//! Applying what the control plane pushes: whole configs and endpoint updates, checked,
//! swapped in, and answered with ACK or NACK; the trust bundle and revocations they carry.

use super::*;
use crate::config_error::ConfigError;
use weft_api::v1::{control_message, proxy_message, Ack, Endpoints, Nack};
use weft_model::config::{EndpointConfig, ProxyConfig, TrustConfig};

/// Applies one pushed message; the answer is an Ack or a Nack with the reason.
pub(crate) fn answer(
    proxy: &Proxy,
    received: control_message::Message,
) -> Option<proxy_message::Message> {
    let (version, result) = match received {
        control_message::Message::Config(full) => {
            let result = serde_json::from_slice::<ProxyConfig>(&full.config_json)
                .map_err(ConfigError::Json)
                .and_then(|config| {
                    if config.version == full.version {
                        install(proxy, config)
                    } else {
                        Err(ConfigError::Version {
                            found: config.version,
                            announced: full.version.clone(),
                        })
                    }
                });
            (full.version, result)
        }
        control_message::Message::Endpoints(update) => {
            let version = update.version.clone();
            (
                version,
                patch(proxy, update).and_then(|c| install(proxy, c)),
            )
        }
        // The assembler hands over whole messages only; the session handles taps.
        control_message::Message::Part(_)
        | control_message::Message::TapStart(_)
        | control_message::Message::TapStop(_) => return None,
    };
    Some(match result {
        Ok(()) => proxy_message::Message::Ack(Ack { version }),
        Err(error) => {
            let reason = error.to_string();
            proxy.metrics.config_rejected();
            tracing::error!(%version, %reason, "configuration rejected; the previous configuration stays in force");
            proxy_message::Message::Nack(Nack { version, reason })
        }
    })
}

/// The running config with the update's endpoints in place.
fn patch(proxy: &Proxy, update: Endpoints) -> Result<ProxyConfig, ConfigError> {
    let running = proxy.snapshot();
    if running.generation == 0 || running.config.version != update.base_version {
        return Err(ConfigError::NotOnBase {
            base: update.base_version,
            running: if running.generation == 0 {
                "none".to_owned()
            } else {
                running.config.version.clone()
            },
        });
    }
    let mut config = ProxyConfig::clone(&running.config);
    drop(running);
    for changed in update.services {
        let endpoints: Vec<EndpointConfig> = serde_json::from_slice(&changed.endpoints_json)
            .map_err(|source| ConfigError::EndpointsJson {
                namespace: changed.namespace.clone(),
                service: changed.service.clone(),
                source,
            })?;
        let service = config
            .services
            .iter_mut()
            .find(|s| s.name == changed.service && s.namespace == changed.namespace)
            .ok_or_else(|| ConfigError::UnknownService {
                namespace: changed.namespace.clone(),
                service: changed.service.clone(),
            })?;
        service.endpoints = endpoints;
    }
    config.version = update.version;
    Ok(config)
}

/// Swaps `config` in, unless it is the one already running (a resync after reconnecting
/// must not reset the running snapshot and its counters).
fn install(proxy: &Proxy, config: ProxyConfig) -> Result<(), ConfigError> {
    let running = proxy.snapshot();
    if running.generation > 0 && running.config.version == config.version {
        return Ok(());
    }
    drop(running);
    // Certificates from files (--cert/--key/--ca) are the operator's: only issued ones
    // follow the control plane's roots.
    let issued = proxy.options.tls.is_none();
    if let (Some(identity), Some(trust), true) = (&proxy.tls, &config.trust, issued) {
        adopt_trust(proxy, identity, trust)?;
    }
    let version = config.version.clone();
    let generation = proxy.apply(config)?;
    tracing::info!(%version, generation, "configuration applied");
    Ok(())
}

/// Trusts the control plane's bundle, if it changed, and asks for a new certificate at
/// once if the current one is not from the root that signs now (a root rotation).
fn adopt_trust(
    proxy: &Proxy,
    identity: &TlsIdentity,
    trust: &TrustConfig,
) -> Result<(), ConfigError> {
    let bundle = weft_identity::parse_pem(&trust.bundle_pem);
    if identity.bundle() != bundle {
        identity
            .trust(&trust.bundle_pem)
            .map_err(ConfigError::Trust)?;
        tracing::info!(roots = bundle.len(), "trust bundle updated");
    }
    let revoked = weft_identity::Revoked::new(
        trust.revoked_identities.iter().map(String::as_str),
        trust.revoked_certificates.iter().map(String::as_str),
    );
    identity.revoke(revoked).map_err(ConfigError::Revocations)?;
    let chain = identity.chain_pem();
    let signing_root: Vec<_> = bundle
        .iter()
        .filter(|root| weft_identity::fingerprint(root) == trust.signing_root)
        .map(|root| weft_identity::to_pem(std::slice::from_ref(root)))
        .collect();
    let from_signing_root = signing_root
        .first()
        .is_some_and(|root| weft_identity::issuing_root(&chain, root).is_some());
    if !from_signing_root {
        proxy.renew_now.notify_one();
    }
    Ok(())
}
