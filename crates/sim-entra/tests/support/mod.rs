//! Test helpers: a throwaway CA and a server certificate for `IP:127.0.0.1`, made with the
//! `openssl` command.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use sim_entra::TlsIdentity;

/// A CA certificate (PEM file) and the server identity it signed.
pub struct Pki {
    /// The CA certificate, PEM, as a file (for `REQUESTS_CA_BUNDLE` / `SSL_CERT_FILE`).
    pub ca_file: PathBuf,
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// The server's identity.
    pub identity: TlsIdentity,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is required for the https tests");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes the CA and a server certificate for `127.0.0.1` and `localhost` in `dir`.
pub fn make_pki(dir: &Path) -> Pki {
    std::fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\nprompt = no\n\
         [dn]\nCN = sim-entra test CA\n\
         [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n",
    )
    .unwrap();
    openssl(
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-config", "ca.cnf",
            "-keyout", "ca.key", "-out", "ca.pem",
        ],
        dir,
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1,DNS:localhost\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n",
    )
    .unwrap();
    openssl(
        &[
            "req",
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
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
        dir,
    );
    openssl(
        &[
            "x509", "-in", "leaf.pem", "-outform", "der", "-out", "leaf.der",
        ],
        dir,
    );
    openssl(
        &["x509", "-in", "ca.pem", "-outform", "der", "-out", "ca.der"],
        dir,
    );
    openssl(
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "leaf.key", "-outform", "der", "-out", "leaf.pk8",
        ],
        dir,
    );
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    Pki {
        ca_file: dir.join("ca.pem"),
        ca_der: read("ca.der"),
        identity: TlsIdentity {
            cert_chain_der: vec![read("leaf.der")],
            key_der: read("leaf.pk8"),
        },
    }
}

/// A fresh temporary directory under the system's.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sim-entra-{name}-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}
