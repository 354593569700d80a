//! Signing for Okta's OAuth service apps: the `private_key_jwt` client assertion (RS256 or ES256,
//! from the service app's PEM key) and DPoP proofs (RFC 9449, ES256 with a key the operator
//! generates and keeps for as long as the token bound to it).

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::{Value, json};

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A private key that signs JWTs.
#[derive(Clone)]
pub enum SigningKey {
    /// RS256.
    Rsa(Arc<RsaKeyPair>),
    /// ES256 (P-256).
    Ec(Arc<EcdsaKeyPair>),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SigningKey::Rsa(_) => "SigningKey(RS256)",
            SigningKey::Ec(_) => "SigningKey(ES256)",
        })
    }
}

impl SigningKey {
    /// Parses a PEM private key: PKCS#8 (`PRIVATE KEY`, RSA or P-256) or PKCS#1 (`RSA PRIVATE
    /// KEY`). The error never contains key material.
    pub fn from_pem(pem: &str) -> Result<SigningKey, String> {
        let label = pem
            .lines()
            .find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
            .ok_or("it is not a PEM private key (no -----BEGIN line)")?
            .to_string();
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| !l.starts_with("-----BEGIN"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|_| "its PEM body is not base64".to_string())?;
        let rng = SystemRandom::new();
        match label.as_str() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der)
                .map(|k| SigningKey::Rsa(Arc::new(k)))
                .or_else(|_| {
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
                        .map(|k| SigningKey::Ec(Arc::new(k)))
                })
                .map_err(|_| {
                    "it is a PKCS#8 key but neither RSA (2048 bits or more) nor EC P-256"
                        .to_string()
                }),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der)
                .map(|k| SigningKey::Rsa(Arc::new(k)))
                .map_err(|_| "it is not a usable RSA key (2048 bits or more)".to_string()),
            other => Err(format!(
                "it is a PEM {other:?}, not a PRIVATE KEY or RSA PRIVATE KEY"
            )),
        }
    }

    /// A fresh P-256 key (for DPoP).
    pub fn generate_ec() -> Result<SigningKey, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "could not generate a DPoP key".to_string())?;
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map(|k| SigningKey::Ec(Arc::new(k)))
            .map_err(|_| "could not load the generated DPoP key".to_string())
    }

    fn alg(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "RS256",
            SigningKey::Ec(_) => "ES256",
        }
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> Value {
        match self {
            SigningKey::Rsa(k) => {
                let c = k.public().into();
                let c: ring::rsa::PublicKeyComponents<Vec<u8>> = c;
                json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)})
            }
            SigningKey::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
        }
    }

    /// A compact JWS of `claims` with `header` (its `alg` set here).
    pub fn sign(&self, mut header: Value, claims: &Value) -> Result<String, String> {
        header["alg"] = json!(self.alg());
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            SigningKey::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .map_err(|_| "RSA signing failed".to_string())?;
                sig
            }
            SigningKey::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(|_| "ECDSA signing failed".to_string())?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{input}.{}", b64(&sig)))
    }
}

/// A random `jti`.
pub fn jti() -> String {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes);
    b64(&bytes)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The `private_key_jwt` client assertion for the org token endpoint `aud`.
pub fn client_assertion(
    key: &SigningKey,
    kid: Option<&str>,
    client_id: &str,
    aud: &str,
) -> Result<String, String> {
    let mut header = json!({"typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let iat = now();
    key.sign(
        header,
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": iat, "exp": iat + 300, "jti": jti()}),
    )
}

/// A DPoP proof for `htm` `htu` (the URL without query), with the server's `nonce` and, for a
/// resource call, `ath` of the access token.
pub fn dpop_proof(
    key: &SigningKey,
    htm: &str,
    htu: &str,
    nonce: Option<&str>,
    access_token: Option<&str>,
) -> Result<String, String> {
    let htu = htu.split(['?', '#']).next().unwrap_or(htu);
    let mut claims = json!({"htm": htm, "htu": htu, "iat": now(), "jti": jti()});
    if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }
    if let Some(t) = access_token {
        claims["ath"] = json!(b64(ring::digest::digest(
            &ring::digest::SHA256,
            t.as_bytes()
        )
        .as_ref()));
    }
    key.sign(json!({"typ": "dpop+jwt", "jwk": key.public_jwk()}), &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_sign() {
        let ec = SigningKey::generate_ec().unwrap();
        let proof = dpop_proof(
            &ec,
            "GET",
            "https://o/api/v1/apps?x=1",
            Some("n1"),
            Some("tok"),
        )
        .unwrap();
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["crv"], "P-256");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["htu"], "https://o/api/v1/apps");
        assert_eq!(claims["nonce"], "n1");
        assert!(claims["ath"].is_string());
        for bad in [
            "",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ] {
            assert!(SigningKey::from_pem(bad).is_err());
        }
    }
}
