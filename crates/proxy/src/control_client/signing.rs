//! Getting and keeping a workload certificate: the first one for a join token, renewals
//! before expiry or when the control plane signs with a new root.

use super::*;
use std::time::SystemTime;
use weft_api::v1::identity_client::IdentityClient;
use weft_api::v1::{SignRequest, SignResponse};
use weft_identity::{generate_csr, SpiffeId};

/// Why one attempt to get a certificate failed.
enum SignError {
    /// The control plane is not reachable (yet): try again.
    Retry(String),
    /// The control plane answered no: trying again cannot help.
    Refused(String),
}

impl ControlClient {
    /// Whether a join token was given (`--token-file`), so this proxy can ask for a certificate.
    pub fn has_token(&self) -> bool {
        self.options.token.is_some()
    }

    /// Obtains this proxy's workload certificate: makes an ECDSA P-256 key (which never
    /// leaves the process), sends a CSR with the join token to `weft.v1.Identity/Sign`, and
    /// builds the TLS identity from the answer. Retries with backoff while the control plane
    /// is unreachable; a refusal (a token for another service, expired, revoked or already
    /// used) is final.
    pub async fn issue_identity(
        &self,
        service: &str,
        namespace: &str,
    ) -> Result<TlsIdentity, String> {
        let token = self
            .options
            .token
            .as_ref()
            .ok_or("no join token: pass --token-file")?;
        // The CA names the certificate itself; the id in the CSR is only informative.
        let requested =
            SpiffeId::new("weft.local", namespace, service).map_err(|e| e.to_string())?;
        let (key_pem, csr_pem) =
            generate_csr(&requested).map_err(|e| format!("cannot make a key pair: {e}"))?;
        let request = SignRequest {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            token: token.0.trim().to_owned(),
            csr_pem,
            ..Default::default()
        };
        let mut backoff = Backoff::default();
        loop {
            match self.sign_once(request.clone()).await {
                Ok(answer) => {
                    return TlsIdentity::from_pem(
                        &answer.cert_chain_pem,
                        &key_pem,
                        &answer.trust_bundle_pem,
                    )
                    .map_err(|e| {
                        format!("the certificate the control plane issued is unusable: {e}")
                    });
                }
                Err(SignError::Refused(reason)) => {
                    return Err(format!(
                        "the control plane refused to issue a certificate for service {service} in namespace {namespace}: {reason}"
                    ));
                }
                Err(SignError::Retry(error)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, ?delay, "cannot get a certificate from the control plane yet; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Keeps `identity` valid: at about half its certificate's lifetime, makes a new key
    /// and gets it certified, proving possession of the current certificate, and swaps it
    /// in; connections keep running and new handshakes use the new certificate. Retries
    /// with backoff while the control plane is away. Runs until the proxy exits.
    pub async fn keep_renewed(&self, proxy: Arc<Proxy>, identity: Arc<TlsIdentity>) {
        let metrics = &proxy.metrics;
        loop {
            metrics.certificate_expiry(identity.not_after());
            let wait = identity
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = proxy.renew_now.notified() => {
                    tracing::info!("renewing now: the control plane signs with a new root");
                }
            }
            let mut backoff = Backoff::default();
            loop {
                match self.renew(&identity).await {
                    Ok(()) => {
                        metrics.certificate_renewed(true);
                        proxy.certificate_changed.send_modify(|n| *n += 1);
                        tracing::info!(
                            identity = %identity.id(),
                            not_after = %weft_identity::format_utc(identity.not_after()),
                            "certificate renewed"
                        );
                        break;
                    }
                    Err(error) => {
                        metrics.certificate_renewed(false);
                        let left = identity
                            .not_after()
                            .duration_since(SystemTime::now())
                            .unwrap_or_default();
                        let delay = backoff.next_delay().min(left.max(BACKOFF_FIRST));
                        if left.is_zero() {
                            tracing::error!(%error, identity = %identity.id(), "the certificate has expired and cannot be renewed; peers refuse this proxy until it is restarted with a new join token");
                        } else {
                            tracing::warn!(%error, ?delay, ?left, "certificate renewal failed; retrying before it expires");
                        }
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    async fn renew(&self, identity: &TlsIdentity) -> Result<(), String> {
        let (key_pem, csr_pem) =
            generate_csr(identity.id()).map_err(|e| format!("cannot make a key pair: {e}"))?;
        let renewal_signature =
            weft_identity::sign_renewal(identity, &csr_pem).map_err(|e| e.to_string())?;
        let request = SignRequest {
            service: identity.id().service().to_owned(),
            namespace: identity.id().namespace().to_owned(),
            csr_pem,
            current_chain_pem: identity.chain_pem(),
            renewal_signature: renewal_signature.into(),
            ..Default::default()
        };
        let answer = self.sign_once(request).await.map_err(|e| match e {
            SignError::Retry(reason) | SignError::Refused(reason) => reason,
        })?;
        identity
            .renew(&answer.cert_chain_pem, &key_pem, &answer.trust_bundle_pem)
            .map_err(|e| format!("the renewed certificate is unusable: {e}"))
    }

    async fn sign_once(&self, request: SignRequest) -> Result<SignResponse, SignError> {
        let channel = self
            .connect()
            .await
            .map_err(|e| SignError::Retry(with_causes(&e)))?;
        match IdentityClient::new(channel).sign(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Cancelled
                | tonic::Code::Aborted
                | tonic::Code::ResourceExhausted => {
                    Err(SignError::Retry(status.message().to_owned()))
                }
                tonic::Code::Unimplemented => Err(SignError::Refused(
                    "this control plane does not issue certificates; give --cert, --key and --ca instead"
                        .to_owned(),
                )),
                _ => Err(SignError::Refused(status.message().to_owned())),
            },
        }
    }
}
