//! Identity-provider admin APIs served over TLS with a certificate from a private CA: the
//! providers trust it when, and only when, the policy's credentials Secret carries that CA as
//! `ca.crt` (TLS verification is never switched off).
//!
//! Each simulator sits behind a TLS-terminating proxy whose certificate (for `IP:127.0.0.1`) is
//! signed by a throwaway CA made with `openssl`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use oidc_refresh_operator::crd::{KeycloakSpec, PingFederateSpec, Rotation};
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, ProviderDeps, ProviderError,
};
use serde_json::json;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

mod common;
use common::provider::init;

const REALM: &str = "coder";
const OPERATOR_SECRET: &str = "op-secret-5f2b9c";
const CODER_SECRET: &str = "coder-client-secret-8d1e";
const ALL_ROLES: [&str; 3] = ["view-clients", "manage-clients", "view-realm"];

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A private CA, a server certificate it signed, and an unrelated CA.
struct Pki {
    /// The CA that signed the server certificate (PEM), as a `ca.crt` would hold it.
    ca_pem: Vec<u8>,
    /// Another CA (PEM) that signed nothing the server presents.
    other_ca_pem: Vec<u8>,
    /// The server certificate (DER), `CN=127.0.0.1`, `subjectAltName=IP:127.0.0.1`.
    leaf_der: Vec<u8>,
    /// The server key (PKCS#8 DER).
    key_der: Vec<u8>,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is required for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA key and self-signed CA certificate (`<name>.key`, `<name>.pem`) in `dir`.
fn make_ca(dir: &Path, name: &str, cn: &str) {
    let config = format!(
        "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\nprompt = no\n\
         [dn]\nCN = {cn}\n\
         [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n"
    );
    let config_file = format!("{name}.cnf");
    std::fs::write(dir.join(&config_file), config).unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-config",
            &config_file,
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
        dir,
    );
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        make_ca(dir, "ca", "oidc-refresh test CA");
        make_ca(dir, "other-ca", "oidc-refresh other test CA");
        // The server key and a signing request for 127.0.0.1.
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
            ],
            dir,
        );
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
             keyUsage = digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        )
        .unwrap();
        // Signed by the CA.
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "4242",
                "-days",
                "1",
                "-extfile",
                "leaf.ext",
                "-outform",
                "DER",
                "-out",
                "leaf.der",
            ],
            dir,
        );
        openssl(
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-outform",
                "DER",
                "-in",
                "leaf.key",
                "-out",
                "leaf.key.der",
            ],
            dir,
        );
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        Pki {
            ca_pem: read("ca.pem"),
            other_ca_pem: read("other-ca.pem"),
            leaf_der: read("leaf.der"),
            key_der: read("leaf.key.der"),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// TLS proxy
// ---------------------------------------------------------------------------------------------

/// A TLS-terminating proxy in front of a plain-HTTP simulator, serving the private CA's server
/// certificate.
struct TlsProxy {
    /// `https://127.0.0.1:<port>`.
    url: String,
    /// Completed handshakes.
    accepted: Arc<AtomicUsize>,
    /// Handshakes the client broke off (or that failed otherwise).
    refused: Arc<AtomicUsize>,
}

impl TlsProxy {
    async fn start(upstream_base_url: &str) -> TlsProxy {
        init();
        let pki = pki();
        let cert = CertificateDer::from(pki.leaf_der.clone());
        let key = PrivateKeyDer::Pkcs8(pki.key_der.clone().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // `host:port` to connect to; a path prefix (e.g. `/auth`) stays part of the URL.
        let rest = upstream_base_url.trim_start_matches("http://");
        let (upstream, prefix) = match rest.split_once('/') {
            Some((host, path)) => (host.to_string(), format!("/{path}")),
            None => (rest.to_string(), String::new()),
        };
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (ok, bad) = (accepted.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                let (ok, bad) = (ok.clone(), bad.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            bad.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    ok.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        TlsProxy {
            url: format!("https://127.0.0.1:{port}{prefix}"),
            accepted,
            refused,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (up to 5 s) for the server side to see a refused handshake; returns the count.
    async fn refused(&self) -> usize {
        for _ in 0..100 {
            let n = self.refused.load(Ordering::SeqCst);
            if n > 0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.refused.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------------------------

fn deps() -> ProviderDeps {
    init();
    common::provider::deps()
}

/// Which CA, if any, the credentials Secret carries as `ca.crt`.
#[derive(Clone, Copy, Debug)]
enum Ca {
    None,
    Right,
    Other,
}

impl Ca {
    fn pem(self) -> Option<Vec<u8>> {
        match self {
            Ca::None => None,
            Ca::Right => Some(pki().ca_pem.clone()),
            Ca::Other => Some(pki().other_ca_pem.clone()),
        }
    }
}

fn secret_data(pairs: &[(&str, &str)], ca: Ca) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    if let Some(pem) = ca.pem() {
        data.insert("ca.crt".into(), pem);
    }
    data
}

async fn keycloak_sim() -> sim_keycloak::SimHandle {
    init();
    let sim = sim_keycloak::start(sim_keycloak::SimConfig::default())
        .await
        .unwrap();
    sim.add_realm(REALM);
    let mut client = sim_keycloak::stock_client("coder");
    client["secret"] = json!(CODER_SECRET);
    client["attributes"]["use.refresh.tokens"] = json!("false");
    sim.add_client(REALM, client);
    sim.add_service_account(REALM, "coder-operator", OPERATOR_SECRET, REALM, &ALL_ROLES);
    sim
}

fn keycloak_spec(url: &str) -> KeycloakSpec {
    KeycloakSpec {
        url: url.into(),
        realm: REALM.into(),
        client_id: "coder".into(),
        credentials_secret: "keycloak-admin".into(),
        auth_realm: None,
        allow_realm_changes: None,
    }
}

fn keycloak_creds(version: &str, ca: Ca) -> Credentials {
    let data = secret_data(
        &[
            ("client-id", "coder-operator"),
            ("client-secret", OPERATOR_SECRET),
        ],
        ca,
    );
    Credentials::new("keycloak-admin", version, data)
}

fn keycloak(url: &str, creds: Credentials, deps: &ProviderDeps) -> Arc<dyn IdentityProvider> {
    providers::keycloak::connect(&keycloak_spec(url), Some(creds), deps)
        .expect("connect builds a client for the Secret's ca.crt")
}

fn keycloak_wanted() -> DesiredSettings {
    DesiredSettings {
        offline_access: true,
        lifetime: None,
        idle_timeout: Some(Duration::from_secs(86400)),
        rotation: None,
        access_token_lifetime: Some(Duration::from_secs(3600)),
    }
}

async fn pingfederate_sim() -> (sim_pingfederate::SimHandle, sim_pingfederate::SandboxSeed) {
    init();
    let sim = sim_pingfederate::start(sim_pingfederate::SimConfig::default())
        .await
        .expect("simulator starts");
    let seed = sim.seed_sandbox();
    (sim, seed)
}

fn pingfederate_creds(seed: &sim_pingfederate::SandboxSeed, version: &str, ca: Ca) -> Credentials {
    let data = secret_data(
        &[
            ("username", &seed.secret_data["username"]),
            ("password", &seed.secret_data["password"]),
        ],
        ca,
    );
    Credentials::new(&seed.secret_name, version, data)
}

fn pingfederate(
    url: &str,
    seed: &sim_pingfederate::SandboxSeed,
    creds: Credentials,
    deps: &ProviderDeps,
) -> Arc<dyn IdentityProvider> {
    let spec = PingFederateSpec {
        admin_url: url.into(),
        client_id: "coder".into(),
        credentials_secret: seed.secret_name.clone(),
        replication: Default::default(),
    };
    providers::pingfederate::connect(&spec, Some(creds), deps)
        .expect("connect builds a client for the Secret's ca.crt")
}

fn pingfederate_wanted() -> DesiredSettings {
    DesiredSettings {
        offline_access: true,
        lifetime: Some(Duration::from_secs(90 * 86400)),
        idle_timeout: Some(Duration::from_secs(36 * 3600)),
        rotation: Some(Rotation::Rotate),
        access_token_lifetime: None,
    }
}

/// The error an untrusted server certificate must produce: unreachable (so it is retried and
/// shown), naming the certificate problem, without any secret value.
fn assert_untrusted_certificate(e: &ProviderError, secrets: &[&str]) {
    assert!(
        matches!(e, ProviderError::Unreachable { .. }),
        "expected Unreachable, got {e:?}"
    );
    let shown = e.to_string();
    assert!(
        shown.contains("certificate"),
        "the message names the certificate: {shown}"
    );
    assert!(
        shown.contains("UnknownIssuer") || shown.to_lowercase().contains("unknown issuer"),
        "the message says the issuer is not trusted: {shown}"
    );
    assert!(
        shown.contains("under the key ca.crt of the policy's credentials Secret"),
        "the message says how to fix it: {shown}"
    );
    for rendered in [shown.clone(), format!("{e:?}")] {
        for secret in secrets {
            assert!(
                !rendered.contains(secret),
                "secret value in the error: {rendered}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keycloak_over_tls_with_the_private_ca_in_ca_crt() {
    let sim = keycloak_sim().await;
    let proxy = TlsProxy::start(&sim.base_url()).await;
    let deps = deps();
    let kc = keycloak(&proxy.url, keycloak_creds("1", Ca::Right), &deps);

    let obs = kc
        .observe_plan(&keycloak_wanted())
        .await
        .unwrap()
        .observation;
    assert!(
        obs.changes
            .iter()
            .any(|c| c.to_string() == "attribute use.refresh.tokens: false -> true"),
        "{:?}",
        obs.changes
    );
    let c = sim.counters();
    assert!(c.token_requests() >= 1, "{c:?}");
    assert!(c.reads() >= 2, "{c:?}");
    assert_eq!(c.writes(), 0, "observe writes nothing: {c:?}");

    let applied = kc.converge(&keycloak_wanted()).await.unwrap();
    assert!(
        applied
            .actions
            .iter()
            .any(|a| a == "set client attribute use.refresh.tokens to true (was false)"),
        "{:?}",
        applied.actions
    );
    assert_eq!(applied.observation.changes, vec![]);
    assert!(sim.counters().writes() >= 1, "{:?}", sim.counters());
    let client = sim.client(REALM, "coder").unwrap();
    assert_eq!(client["attributes"]["use.refresh.tokens"], json!("true"));
    assert!(proxy.accepted() >= 1, "the requests went through the proxy");
    assert_eq!(proxy.refused.load(Ordering::SeqCst), 0);
}

/// Keycloak behind the proxy with `ca`: the observe fails as an untrusted certificate, before
/// any request reaches the server. Returns the error.
async fn keycloak_refused_with(ca: Ca) -> ProviderError {
    let sim = keycloak_sim().await;
    let proxy = TlsProxy::start(&sim.base_url()).await;
    let deps = deps();
    let kc = keycloak(&proxy.url, keycloak_creds("1", ca), &deps);

    let e = kc.observe_plan(&keycloak_wanted()).await.unwrap_err();
    assert_untrusted_certificate(&e, &[OPERATOR_SECRET, CODER_SECRET]);
    assert_eq!(sim.counters().total(), 0, "nothing reached the server");
    assert_eq!(proxy.accepted(), 0);
    assert!(proxy.refused().await >= 1, "the handshake was refused");
    e
}

#[tokio::test]
async fn keycloak_over_tls_without_ca_crt_is_refused() {
    let e = keycloak_refused_with(Ca::None).await;
    assert!(e.is_transient(), "a TLS failure is retried: {e:?}");
}

#[tokio::test]
async fn keycloak_over_tls_with_another_ca_in_ca_crt_is_refused() {
    keycloak_refused_with(Ca::Other).await;
}

#[tokio::test]
async fn pingfederate_admin_api_over_tls_with_the_private_ca_in_ca_crt() {
    let (sim, seed) = pingfederate_sim().await;
    let proxy = TlsProxy::start(&sim.base_url()).await;
    let deps = deps();
    let password = seed.secret_data["password"].clone();

    // Without ca.crt the admin port's certificate is not trusted.
    let pf = pingfederate(
        &proxy.url,
        &seed,
        pingfederate_creds(&seed, "1", Ca::None),
        &deps,
    );
    let e = pf.observe_plan(&pingfederate_wanted()).await.unwrap_err();
    assert_untrusted_certificate(&e, &[&password]);
    assert_eq!(sim.counters().total(), 0, "nothing reached the server");

    // With it, observe and apply go through.
    let pf = pingfederate(
        &proxy.url,
        &seed,
        pingfederate_creds(&seed, "2", Ca::Right),
        &deps,
    );
    let obs = pf
        .observe_plan(&pingfederate_wanted())
        .await
        .unwrap()
        .observation;
    assert!(!obs.changes.is_empty(), "the seeded client needs changes");
    let c = sim.counters();
    assert!(c.get("GET", "/oauth/clients/{id}") >= 1, "{c:?}");
    assert_eq!(c.writes(), 0, "observe writes nothing: {c:?}");

    let applied = pf.converge(&pingfederate_wanted()).await.unwrap();
    assert!(!applied.actions.is_empty());
    assert_eq!(applied.observation.changes, []);
    let c = sim.counters();
    assert_eq!(c.get("PUT", "/oauth/clients/{id}"), 1, "{c:?}");
    let client = sim.client("coder").unwrap();
    assert_eq!(
        client["grantTypes"],
        json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"])
    );
    assert!(proxy.accepted() >= 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_rotated_secret_with_the_right_ca_is_picked_up() {
    let sim = keycloak_sim().await;
    let proxy = TlsProxy::start(&sim.base_url()).await;
    // One set of dependencies, as in the running operator: the HTTP clients are cached per CA
    // bundle, so the new ca.crt must get a client of its own.
    let deps = deps();

    let kc = keycloak(&proxy.url, keycloak_creds("1", Ca::Other), &deps);
    let e = kc.observe_plan(&keycloak_wanted()).await.unwrap_err();
    assert_untrusted_certificate(&e, &[OPERATOR_SECRET, CODER_SECRET]);
    assert_eq!(sim.counters().total(), 0);

    // The Secret is fixed: new resourceVersion, the right CA.
    let kc = keycloak(&proxy.url, keycloak_creds("2", Ca::Right), &deps);
    kc.observe_plan(&keycloak_wanted()).await.unwrap();
    kc.converge(&keycloak_wanted()).await.unwrap();
    assert!(sim.counters().token_requests() >= 1);
    assert!(sim.counters().writes() >= 1);

    // And back to the wrong CA: the cached client for it still refuses the server.
    let kc = keycloak(&proxy.url, keycloak_creds("3", Ca::Other), &deps);
    let e = kc.observe_plan(&keycloak_wanted()).await.unwrap_err();
    assert_untrusted_certificate(&e, &[OPERATOR_SECRET, CODER_SECRET]);
}
