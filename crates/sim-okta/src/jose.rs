//! The JOSE the simulator checks: compact JWS (RS256 and ES256) of `private_key_jwt` client
//! assertions and DPoP proofs, JWK thumbprints (RFC 7638), `ath` (RFC 9449).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Value, json};

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url (padding tolerated).
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// A parsed compact JWS.
#[derive(Clone, Debug)]
pub struct Jws {
    /// Protected header.
    pub header: Value,
    /// Claims.
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

/// Parses a compact JWS without checking its signature.
pub fn parse(token: &str) -> Result<Jws, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let json = |p: &str| -> Result<Value, String> {
        let bytes = unb64(p).ok_or("not base64url")?;
        serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
    };
    Ok(Jws {
        header: json(h)?,
        claims: json(c)?,
        signing_input: format!("{h}.{c}"),
        signature: unb64(s).ok_or("signature is not base64url")?,
    })
}

impl Jws {
    /// Checks the signature with a public JWK (`RSA` with RS256, `EC` P-256 with ES256).
    pub fn verify(&self, jwk: &Value) -> Result<(), String> {
        let alg = self.header["alg"].as_str().unwrap_or_default();
        let msg = self.signing_input.as_bytes();
        let field = |k: &str| {
            jwk[k]
                .as_str()
                .and_then(unb64)
                .ok_or(format!("jwk has no {k}"))
        };
        match (alg, jwk["kty"].as_str()) {
            ("RS256", Some("RSA")) => RsaPublicKeyComponents {
                n: field("n")?,
                e: field("e")?,
            }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, &self.signature)
            .map_err(|_| "signature does not verify".to_string()),
            ("ES256", Some("EC")) if jwk["crv"] == "P-256" => {
                let mut point = vec![4u8];
                point.extend(field("x")?);
                point.extend(field("y")?);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, &self.signature)
                    .map_err(|_| "signature does not verify".to_string())
            }
            (alg, kty) => Err(format!(
                "unsupported alg {alg:?} for key type {}",
                kty.unwrap_or("?")
            )),
        }
    }
}

/// RFC 7638 thumbprint of a public JWK.
pub fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => json!({"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}),
        _ => json!({"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}),
    };
    let text = serde_json::to_string(&canonical).unwrap_or_default();
    b64(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// `ath`: base64url(SHA-256(access token)).
pub fn ath(token: &str) -> String {
    b64(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// A fresh P-256 key for tests and the sandbox: (PKCS#8 PEM, public JWK).
pub fn generate_es256() -> (String, Value) {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("ring generates a P-256 key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("the generated key parses");
    let public = pair.public_key().as_ref();
    let jwk =
        json!({"kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..65])});
    let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    (pem, jwk)
}

/// The public JWK of a PKCS#8 PEM private key (RSA or P-256), to register a service app whose
/// private key a client holds.
pub fn public_jwk_of_pem(pem: &str) -> Option<Value> {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RsaKeyPair};
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    if let Ok(k) = RsaKeyPair::from_pkcs8(&der) {
        let c: ring::rsa::PublicKeyComponents<Vec<u8>> = k.public().into();
        return Some(json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)}));
    }
    let k = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &ring::rand::SystemRandom::new(),
    )
    .ok()?;
    let p = k.public_key().as_ref();
    Some(json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])}))
}
