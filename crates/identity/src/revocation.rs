//! What the control plane revoked: whole workload identities, and single certificates by
//! the SHA-256 of their DER. A peer presenting either is refused at the handshake, and a
//! session resumed from before the revocation is refused right after it
//! ([`crate::TlsIdentity::refused_peer`]).

use crate::verify::PeerIdentityError;
use crate::SpiffeId;
use std::collections::BTreeSet;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    identities: BTreeSet<SpiffeId>,
    /// SHA-256 of each revoked certificate's DER, lowercase hex.
    certificates: BTreeSet<String>,
}

impl Revoked {
    /// `identities` as SPIFFE ids (ones that do not parse are skipped: they can name no
    /// certificate), `certificates` as SHA-256 fingerprints.
    pub fn new<'a>(
        identities: impl IntoIterator<Item = &'a str>,
        certificates: impl IntoIterator<Item = &'a str>,
    ) -> Revoked {
        Revoked {
            identities: identities
                .into_iter()
                .filter_map(|id| SpiffeId::parse(id).ok())
                .collect(),
            certificates: certificates
                .into_iter()
                .map(str::to_ascii_lowercase)
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.certificates.is_empty()
    }

    /// Whether `self` revokes something `before` did not.
    pub(crate) fn adds_to(&self, before: &Revoked) -> bool {
        !self.identities.is_subset(&before.identities)
            || !self.certificates.is_subset(&before.certificates)
    }

    /// Why a certificate (`der`, naming `id`) is refused, if it is.
    pub(crate) fn refuses(&self, der: &[u8], id: &SpiffeId) -> Option<PeerIdentityError> {
        if self.is_empty() {
            return None;
        }
        if self.identities.contains(id) {
            return Some(PeerIdentityError::Revoked {
                presented: id.clone(),
                what: "identity",
            });
        }
        let fingerprint = crate::fingerprint(der);
        self.certificates
            .contains(&fingerprint)
            .then(|| PeerIdentityError::Revoked {
                presented: id.clone(),
                what: "certificate",
            })
    }
}
