//! The certificate signing path: an Identity.Sign request (CSR, join token, renewal proof)
//! from anyone who reaches the gRPC port, handled by the control plane's real service with
//! a CA and a store of its own.
#![no_main]

use prost::Message as _;
use std::sync::OnceLock;
use weft_api::v1::identity_server::Identity as _;
use weft_api::v1::SignRequest;

struct Service {
    runtime: tokio::runtime::Runtime,
    signer: weft_control::identity::IdentityService,
    ca: weft_identity::CertificateAuthority,
}

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("weft-fuzz-signing-{}", std::process::id()));
        let signer = runtime.block_on(weft_control::fuzzing::identity_service(&dir));
        let ca = weft_identity::CertificateAuthority::generate("weft.local").unwrap();
        Service {
            runtime,
            signer,
            ca,
        }
    })
}

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Ok(request) = SignRequest::decode(bytes) else {
        return;
    };
    let service = service();
    // The CSR parser and signer on their own, as if the token had been good...
    if let Ok(id) = weft_identity::SpiffeId::new("weft.local", "default", "fuzz") {
        let _ = service
            .ca
            .sign_csr(&request.csr_pem, &id, std::time::Duration::from_secs(60));
    }
    // ...and the whole request, token and renewal proof included.
    let _ = service
        .runtime
        .block_on(service.signer.sign(tonic::Request::new(request)));
});
