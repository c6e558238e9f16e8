//! Bearer secrets (join tokens, API tokens): random, shown once, kept only as a hash.
//!
//! A secret is 32 random bytes in hex behind a prefix that says what it is for. The store
//! keeps its SHA-256; the first 16 hex digits of that hash are the secret's id, which names
//! it in lists and revocations without revealing it.

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// Makes a new secret: `prefix` followed by 64 hex digits. `None` when the system's random
/// source fails.
pub fn generate(random: &SystemRandom, prefix: &str) -> Option<String> {
    let mut bytes = [0u8; 32];
    random.fill(&mut bytes).ok()?;
    Some(format!("{prefix}{}", hex(&bytes)))
}

/// The SHA-256 of `secret`, hex: what is kept.
pub fn hash(secret: &str) -> String {
    hex(digest(&SHA256, secret.as_bytes()).as_ref())
}

/// The id that names a secret: the start of its hash.
pub fn id_of(hash: &str) -> String {
    hash[..16].to_owned()
}

/// Whether `id` has the shape of an id (16 lowercase hex digits).
pub fn is_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_named_by_their_hash() {
        let random = SystemRandom::new();
        let a = generate(&random, "p_").unwrap();
        let b = generate(&random, "p_").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("p_") && a.len() == 66, "{a}");
        let id = id_of(&hash(&a));
        assert!(is_id(&id), "{id}");
        assert_ne!(id, id_of(&hash(&b)));
        assert!(!is_id("0123456789ABCDEF") && !is_id("abc"));
    }
}
