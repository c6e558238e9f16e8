//! The Identity gRPC service (`weft.v1.Identity/Sign`): a proxy sends a CSR with its join
//! token and gets a workload certificate for its service and the trust bundle.
//!
//! The token must be for exactly the service and namespace asked for; a single-use token is
//! consumed. The certificate names `spiffe://<trust-domain>/ns/<namespace>/svc/<service>`
//! whatever the CSR says, lasting the `Mesh` resource's `certificateTTL` (24 h by default).

use crate::audit::{self, AuditRecord};
use crate::ca::{MeshCa, DEFAULT_TRUST_DOMAIN};
use crate::resource_set::ResourceSet;
use crate::revocation::RevocationList;
use crate::tokens::TokenStore;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use weft_api::v1::identity_server::{self, Identity};
use weft_api::v1::{SignRequest, SignResponse};
use weft_identity::SpiffeId;
use weft_model::resources::Spec;

/// A workload certificate's lifetime when no `Mesh` resource sets one.
pub const DEFAULT_CERTIFICATE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Signs workload certificates. Cheap to clone.
#[derive(Clone)]
pub struct IdentityService {
    ca: Arc<MeshCa>,
    tokens: Arc<TokenStore>,
    resources: watch::Receiver<Arc<ResourceSet>>,
    revoked: watch::Receiver<RevocationList>,
}

impl IdentityService {
    pub fn new(
        ca: Arc<MeshCa>,
        tokens: Arc<TokenStore>,
        resources: watch::Receiver<Arc<ResourceSet>>,
        revoked: watch::Receiver<RevocationList>,
    ) -> Self {
        Self {
            ca,
            tokens,
            resources,
            revoked,
        }
    }

    /// Refuses a revoked identity (no new certificate, by token or renewal) and the renewal
    /// of a revoked certificate.
    fn check_revocation(&self, id: &SpiffeId, request: &SignRequest) -> Result<(), String> {
        let revoked = self.revoked.borrow();
        if revoked.identity_revoked(id) {
            return Err(format!(
                "{id} was revoked; an operator restores it with `weft identity restore {id}`"
            ));
        }
        let current = weft_identity::parse_pem(&request.current_chain_pem);
        if let Some(leaf) = current.first() {
            if revoked.certificate_revoked(&weft_identity::fingerprint(leaf)) {
                return Err(
                    "the current certificate was revoked: it renews nothing; start the proxy \
                     with a new join token"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn into_service(self) -> identity_server::IdentityServer<Self> {
        identity_server::IdentityServer::new(self)
    }

    /// A renewal's proof: the current certificate is this CA's, valid, names `id`, and its
    /// key signed the CSR.
    fn verify_renewal(&self, request: &SignRequest, id: &SpiffeId) -> Result<(), String> {
        let current = weft_identity::verify_renewal(
            &self.ca.trust_bundle_pem(),
            &request.current_chain_pem,
            &request.csr_pem,
            &request.renewal_signature,
            SystemTime::now(),
        )
        .map_err(|err| err.to_string())?;
        if current != *id {
            return Err(format!(
                "the current certificate names {current}; it can renew only that identity, not {id}"
            ));
        }
        Ok(())
    }

    /// The `Mesh` resource's `certificateTTL`, or [`DEFAULT_CERTIFICATE_TTL`].
    fn certificate_ttl(&self) -> Duration {
        self.resources
            .borrow()
            .resources
            .iter()
            .find_map(|r| match &r.spec {
                Spec::Mesh(mesh) => Some(Duration::from_millis(mesh.certificate_ttl.as_millis())),
                _ => None,
            })
            .unwrap_or(DEFAULT_CERTIFICATE_TTL)
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let request = request.into_inner();
        let trust_domain = self.ca.trust_domain().unwrap_or(DEFAULT_TRUST_DOMAIN);
        let id = SpiffeId::new(trust_domain, &request.namespace, &request.service)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        if crate::access::is_reserved_namespace(&request.namespace) {
            return Err(Status::permission_denied(format!(
                "namespace {} is reserved for the control plane and its operators",
                request.namespace
            )));
        }
        let renewal = !request.renewal_signature.is_empty();
        let authorized = if let Err(reason) = self.check_revocation(&id, &request) {
            Err(reason)
        } else if renewal {
            self.verify_renewal(&request, &id)
        } else {
            self.tokens
                .verify_and_consume(&request.token, &request.service, &request.namespace)
                .await
                .map_err(|err| err.to_string())
        };
        authorized.map_err(|reason| {
            tracing::warn!(identity = %id, renewal, %reason, "refused a certificate request");
            Status::permission_denied(reason)
        })?;
        let ttl = self.certificate_ttl();
        let signed = self
            .ca
            .authority()
            .sign_csr(&request.csr_pem, &id, ttl)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let not_after_unix = signed
            .not_after
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        tracing::info!(identity = %id, ?ttl, renewal, "issued a workload certificate");
        let record = AuditRecord::new(
            if renewal {
                "proxy (renewal signed by its key)"
            } else {
                "proxy (join token)"
            },
            "certificate.issue",
            id.to_string(),
        )
        .detail(format!(
            "valid until {}",
            weft_identity::format_utc(signed.not_after)
        ));
        audit::record(&*self.tokens.store, record).await;
        Ok(Response::new(SignResponse {
            cert_chain_pem: signed.cert_pem,
            trust_bundle_pem: self.ca.trust_bundle_pem(),
            not_after_unix,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaSource;
    use crate::store::tests::ScratchDir;
    use crate::store::{RedbStore, Store};

    async fn service(dir: &ScratchDir) -> (IdentityService, Arc<TokenStore>) {
        let (service, tokens, _) = service_with_revocations(dir).await;
        (service, tokens)
    }

    async fn service_with_revocations(
        dir: &ScratchDir,
    ) -> (
        IdentityService,
        Arc<TokenStore>,
        crate::revocation::Revocations,
    ) {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).unwrap());
        let resources = store.subscribe();
        let current = resources.borrow().clone();
        let ca = MeshCa::load_or_create(&*store, &CaSource::Store, &current)
            .await
            .unwrap();
        let tokens = Arc::new(TokenStore::new(store.clone()));
        let revocations = crate::revocation::Revocations::open(store).await.unwrap();
        (
            IdentityService::new(Arc::new(ca), tokens.clone(), resources, revocations.watch()),
            tokens,
            revocations,
        )
    }

    fn request(service: &str, token: &str) -> Request<SignRequest> {
        let asked = SpiffeId::parse("spiffe://weft.local/ns/default/svc/admin").unwrap();
        let (_, csr_pem) = weft_identity::generate_csr(&asked).unwrap();
        Request::new(SignRequest {
            service: service.to_owned(),
            namespace: "default".to_owned(),
            token: token.to_owned(),
            csr_pem,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn signs_for_the_token_identity_and_refuses_reuse_and_other_services() {
        let dir = ScratchDir::new("identity-sign");
        let (service, tokens) = service(&dir).await;
        let ttl = Duration::from_secs(600);
        let single = tokens.create("web", "default", ttl, true).await.unwrap();

        let refused = service
            .sign(request("api", &single.token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("not api"),
            "{}",
            refused.message()
        );

        let answer = service
            .sign(request("web", &single.token))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.trust_bundle_pem.contains("BEGIN CERTIFICATE"));
        let now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let left = answer.not_after_unix - now;
        assert!((86_000..=86_400).contains(&left), "{left}");

        let reused = service
            .sign(request("web", &single.token))
            .await
            .unwrap_err();
        assert_eq!(reused.code(), tonic::Code::PermissionDenied);
        assert!(
            reused.message().contains("single-use"),
            "{}",
            reused.message()
        );
    }

    #[tokio::test]
    async fn a_valid_certificate_renews_itself_without_a_token() {
        let dir = ScratchDir::new("identity-renew");
        let (service, tokens) = service(&dir).await;
        let token = tokens
            .create("web", "default", Duration::from_secs(600), true)
            .await
            .unwrap();
        let id = SpiffeId::parse("spiffe://weft.local/ns/default/svc/web").unwrap();
        let (key_pem, csr_pem) = weft_identity::generate_csr(&id).unwrap();
        let first = service
            .sign(Request::new(SignRequest {
                service: "web".into(),
                namespace: "default".into(),
                token: token.token,
                csr_pem,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let current = weft_identity::TlsIdentity::from_pem(
            &first.cert_chain_pem,
            &key_pem,
            &first.trust_bundle_pem,
        )
        .unwrap();

        let renewal = |service_name: &str| {
            let (_, csr_pem) = weft_identity::generate_csr(&id).unwrap();
            let renewal_signature = weft_identity::sign_renewal(&current, &csr_pem).unwrap();
            Request::new(SignRequest {
                service: service_name.into(),
                namespace: "default".into(),
                csr_pem,
                current_chain_pem: first.cert_chain_pem.clone(),
                renewal_signature: renewal_signature.into(),
                ..Default::default()
            })
        };
        let renewed = service.sign(renewal("web")).await.unwrap().into_inner();
        assert!(renewed.cert_chain_pem.contains("BEGIN CERTIFICATE"));
        assert_ne!(renewed.cert_chain_pem, first.cert_chain_pem);

        // A certificate renews only its own identity.
        let refused = service.sign(renewal("api")).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("only that identity"),
            "{}",
            refused.message()
        );

        // A signature that does not match is refused.
        let mut forged = renewal("web").into_inner();
        let mut signature = forged.renewal_signature.to_vec();
        signature[10] ^= 0xff;
        forged.renewal_signature = signature.into();
        let refused = service.sign(Request::new(forged)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    }

    #[tokio::test]
    async fn a_revoked_identity_gets_no_certificate_and_a_revoked_one_renews_nothing() {
        let dir = ScratchDir::new("identity-revoked");
        let (service, tokens, revocations) = service_with_revocations(&dir).await;
        let ttl = Duration::from_secs(600);
        let web = SpiffeId::parse("spiffe://weft.local/ns/default/svc/web").unwrap();
        let (key_pem, csr_pem) = weft_identity::generate_csr(&web).unwrap();
        let first = tokens.create("web", "default", ttl, false).await.unwrap();
        let issued = service
            .sign(Request::new(SignRequest {
                service: "web".into(),
                namespace: "default".into(),
                token: first.token.clone(),
                csr_pem,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let current = weft_identity::TlsIdentity::from_pem(
            &issued.cert_chain_pem,
            &key_pem,
            &issued.trust_bundle_pem,
        )
        .unwrap();
        let renewal = || {
            let (_, csr_pem) = weft_identity::generate_csr(&web).unwrap();
            let renewal_signature = weft_identity::sign_renewal(&current, &csr_pem).unwrap();
            Request::new(SignRequest {
                service: "web".into(),
                namespace: "default".into(),
                csr_pem,
                current_chain_pem: issued.cert_chain_pem.clone(),
                renewal_signature: renewal_signature.into(),
                ..Default::default()
            })
        };

        // One certificate revoked: it cannot renew; a fresh token still works.
        let leaf = weft_identity::parse_pem(&issued.cert_chain_pem)[0].clone();
        revocations
            .revoke_certificate(&weft_identity::fingerprint(&leaf), None)
            .await
            .unwrap();
        let refused = service.sign(renewal()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("revoked"),
            "{}",
            refused.message()
        );
        service.sign(request("web", &first.token)).await.unwrap();

        // The identity revoked: neither a token nor anything else gets it a certificate.
        revocations.revoke_identity(&web).await.unwrap();
        let refused = service
            .sign(request("web", &first.token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("weft identity restore"),
            "{}",
            refused.message()
        );
        revocations.restore_identity(&web).await.unwrap();
        service.sign(request("web", &first.token)).await.unwrap();
    }
}
