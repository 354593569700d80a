//! The simulator's "configuration encryption": every ciphertext it hands out (`encryptedSecret`)
//! is remembered with the plaintext it encrypts, like PingFederate, whose configuration key can
//! decrypt any `OBF:JWE:` value it ever produced.
//!
//! - [`Cipher::encrypt`] returns a **fresh** ciphertext on every call, even for the same secret
//!   (PingFederate re-encrypts on every `GET`).
//! - [`Cipher::decrypt`] accepts any ciphertext the server issued, whatever secret it encrypted
//!   and however old it is; anything else is undecryptable.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The at-rest ciphertext of the seeded `coder` client secret (what [`crate::seed_client`]
/// carries).
pub const SEED_CIPHERTEXT: &str = "OBF:JWE:eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2Iiwia2lkIjoiU2ltUGYiLCJ2ZXJzaW9uIjoiMTIuMSJ9..c2VlZC1zZWNyZXQtY29kZXI.Zm9vYmFyYmF6cXV4";

/// The plaintext of [`SEED_CIPHERTEXT`]: the secret Coder holds for the seeded client.
pub const SEED_SECRET: &str = "coder-oidc-client-secret-seeded-5Fv8";

pub(crate) struct Cipher {
    header: String,
    issued: BTreeMap<String, String>,
    seq: u64,
    salt: u64,
}

impl Cipher {
    pub(crate) fn new(version_string: &str) -> Cipher {
        let header = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"dir","enc":"A128CBC-HS256","kid":"SimPfCfgKey","version":"{version_string}"}}"#
        ));
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        let mut c = Cipher {
            header,
            issued: BTreeMap::new(),
            seq: 0,
            salt,
        };
        c.issued
            .insert(SEED_CIPHERTEXT.to_string(), SEED_SECRET.to_string());
        c
    }

    /// A new ciphertext for `plaintext` (never the same string twice).
    pub(crate) fn encrypt(&mut self, plaintext: &str) -> String {
        self.seq += 1;
        let mut state = self.salt ^ self.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut bytes = |n: usize| {
            (0..n)
                .map(|_| {
                    // xorshift64*
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
                })
                .collect::<Vec<u8>>()
        };
        let iv = URL_SAFE_NO_PAD.encode(bytes(16));
        let body_len = (plaintext.len() / 16 + 1) * 16;
        let body = URL_SAFE_NO_PAD.encode(bytes(body_len));
        let tag = URL_SAFE_NO_PAD.encode(bytes(16));
        let ct = format!("OBF:JWE:{}..{iv}.{body}.{tag}", self.header);
        self.issued.insert(ct.clone(), plaintext.to_string());
        ct
    }

    /// The plaintext of a ciphertext this server issued.
    pub(crate) fn decrypt(&self, ciphertext: &str) -> Option<&str> {
        self.issued.get(ciphertext).map(String::as_str)
    }

    /// Makes an externally supplied ciphertext decryptable (for unvalidated direct edits): it
    /// decrypts to an opaque secret nobody knows.
    pub(crate) fn adopt(&mut self, ciphertext: &str) -> String {
        self.issued
            .entry(ciphertext.to_string())
            .or_insert_with(|| format!("(unknown secret behind {ciphertext})"))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ciphertexts_all_decrypt() {
        let mut c = Cipher::new("12.1.0.4");
        let a = c.encrypt("s1");
        let b = c.encrypt("s1");
        let d = c.encrypt("s2");
        assert_ne!(a, b);
        assert!(a.starts_with("OBF:JWE:eyJ"));
        assert_eq!(c.decrypt(&a), Some("s1"));
        assert_eq!(c.decrypt(&b), Some("s1"));
        assert_eq!(c.decrypt(&d), Some("s2"));
        assert_eq!(c.decrypt(SEED_CIPHERTEXT), Some(SEED_SECRET));
        assert_eq!(c.decrypt("OBF:JWE:forged"), None);
    }
}
