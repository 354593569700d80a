//! The Duende provider's database backend against a real PostgreSQL server holding the
//! `ConfigurationDbContext` schema (`tests/duende_db/configuration-schema.postgresql.sql`).
//!
//! One server per test binary: Debian's PostgreSQL (`/usr/lib/postgresql/<v>/bin`, or the
//! directory in `DUENDE_PG_BIN`), initialised in a temporary directory and run as `nobody` when
//! the tests run as root (PostgreSQL refuses root), listening on 127.0.0.1 only. It dies with the
//! test process (`setpriv --pdeathsig`), and is stopped and its directory removed at exit.
//! Each test gets its own database.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use oidc_refresh_operator::crd::{DuendeSpec, Rotation};
use oidc_refresh_operator::metrics::Metrics;
use oidc_refresh_operator::providers::http::{HttpClients, TenantPolicy};
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, ProviderDeps, ProviderError,
};
use oidc_refresh_operator::sandbox::{self, Sandbox, SandboxProvider};
use serde_json::json;

const PASSWORD: &str = "pg-test-password-7f3a";
const NOBODY: u32 = 65534;
const SCHEMA_SQL: &str = include_str!("duende_db/configuration-schema.postgresql.sql");

struct Server {
    port: u16,
    /// PEM of the CA that issued the server's TLS certificate.
    ca: String,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static CLEANUP: OnceLock<(u32, PathBuf)> = OnceLock::new();

fn pg_bin() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("DUENDE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!(
                "PostgreSQL is required by the Duende database tests and /usr/lib/postgresql is missing ({e}): \
                 apt-get install -y postgresql (scripts/test-all installs it)"
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no /usr/lib/postgresql/<version>/bin/initdb".to_string())
}

/// `cmd` run as `nobody` (when root) and killed when the thread that started it ends.
fn unprivileged(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    if unsafe { libc::geteuid() } == 0 {
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ]);
    }
    c.args(["--pdeathsig", "KILL", "--"]).arg(program);
    c.env("HOME", "/tmp").env("LC_ALL", "C");
    c
}

extern "C" fn stop_server() {
    if let Some((pid, dir)) = CLEANUP.get() {
        unsafe {
            libc::kill(*pid as i32, libc::SIGQUIT);
        }
        let pidfile = dir.join("data/postmaster.pid");
        let start = Instant::now();
        while pidfile.exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(*pid as i32, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn start_server() -> Result<Server, String> {
    let bin = pg_bin()?;
    let dir = tempfile::Builder::new()
        .prefix("duende-pg-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?
        .keep();
    let root = unsafe { libc::geteuid() } == 0;
    std::fs::write(dir.join("pw"), PASSWORD).map_err(|e| e.to_string())?;
    std::fs::create_dir(dir.join("sock")).map_err(|e| e.to_string())?;
    if root {
        for p in [dir.clone(), dir.join("pw"), dir.join("sock")] {
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).map_err(|e| e.to_string())?;
        }
    }
    let out = unprivileged(&bin.join("initdb"))
        .args(["-D"])
        .arg(dir.join("data"))
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", dir.join("pw").display()))
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let ca = make_certificates(&dir)?;
    if root {
        for f in ["server.crt", "server.key"] {
            std::os::unix::fs::chown(dir.join(f), Some(NOBODY), Some(NOBODY))
                .map_err(|e| e.to_string())?;
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
    let mut cmd = unprivileged(&bin.join("postgres"));
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
        ])
        .arg(dir.join("sock"))
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "ssl=on",
        ])
        .arg("-c")
        .arg(format!(
            "ssl_cert_file={}",
            dir.join("server.crt").display()
        ))
        .arg("-c")
        .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let (tx, rx) = std::sync::mpsc::channel();
    // The thread that starts the server lives as long as the process (--pdeathsig is per thread).
    std::thread::spawn(move || match cmd.spawn() {
        Ok(mut child) => {
            let _ = tx.send(Ok(child.id()));
            let _ = child.wait();
        }
        Err(e) => {
            let _ = tx.send(Err(format!("cannot start postgres: {e}")));
        }
    });
    let pid = rx.recv().map_err(|e| e.to_string())??;
    let _ = CLEANUP.set((pid, dir.clone()));
    unsafe {
        libc::atexit(stop_server);
    }
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("postgres did not listen within 30s:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Server { port, ca })
}

/// A CA and a server certificate for 127.0.0.1 issued by it (openssl, which Debian's PostgreSQL
/// package depends on); returns the CA's PEM.
fn make_certificates(dir: &Path) -> Result<String, String> {
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("cannot run openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=duende-test-ca",
            ],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])?;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|e| e.to_string())?;
    std::fs::read_to_string(dir.join("ca.crt")).map_err(|e| e.to_string())
}

fn server() -> &'static Server {
    match SERVER.get_or_init(start_server) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn conn_string(db: &str) -> String {
    format!(
        "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
        server().port
    )
}

async fn connect(db: &str) -> tokio_postgres::Client {
    let start = Instant::now();
    loop {
        match tokio_postgres::connect(&conn_string(db), tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return client;
            }
            // "the database system is starting up"
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot connect to the test server: {e}"),
        }
    }
}

/// A fresh database with Duende's schema in `schema` and two clients, `coder` and
/// `coder-staging`, at the EF entity's defaults plus some settings of their own.
async fn fresh_db(schema: &str) -> (String, tokio_postgres::Client) {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "duende_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    connect("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let db = connect(&name).await;
    db.batch_execute(&SCHEMA_SQL.replace("{schema}", schema))
        .await
        .unwrap();
    for (id, extra) in [("coder", "Coder workspaces"), ("coder-staging", "Staging")] {
        db.execute(
            &format!(
                r#"INSERT INTO "{schema}"."Clients" ("Enabled", "ClientId", "ProtocolType", "RequireClientSecret", "ClientName",
                "Description", "RequireConsent", "AllowRememberConsent", "AlwaysIncludeUserClaimsInIdToken", "RequirePkce",
                "AllowPlainTextPkce", "RequireRequestObject", "AllowAccessTokensViaBrowser", "RequireDPoP", "DPoPValidationMode",
                "DPoPClockSkew", "FrontChannelLogoutSessionRequired", "BackChannelLogoutSessionRequired", "AllowOfflineAccess",
                "IdentityTokenLifetime", "AccessTokenLifetime", "AuthorizationCodeLifetime", "AbsoluteRefreshTokenLifetime",
                "SlidingRefreshTokenLifetime", "RefreshTokenUsage", "UpdateAccessTokenClaimsOnRefresh", "RefreshTokenExpiration",
                "AccessTokenType", "EnableLocalLogin", "IncludeJwtId", "AlwaysSendClientClaims", "ClientClaimsPrefix",
                "DeviceCodeLifetime", "Created", "NonEditable", "RequirePushedAuthorization")
                VALUES (true, $1, 'oidc', true, $1, $2, false, true, false, true, false, false, false, false, 0,
                interval '5 minutes', true, true, false, 300, 3600, 300, 2592000, 1296000, 1, false, 1, 0, true, false,
                false, 'client_', 300, timestamp '2026-01-05 09:30:00.123456', false, false)"#
            ),
            &[&id, &extra],
        )
        .await
        .unwrap();
        db.batch_execute(&format!(
            r#"INSERT INTO "{schema}"."ClientGrantTypes" ("GrantType", "ClientId")
                 SELECT 'authorization_code', "Id" FROM "{schema}"."Clients" WHERE "ClientId" = '{id}';
               INSERT INTO "{schema}"."ClientScopes" ("Scope", "ClientId")
                 SELECT s, "Id" FROM "{schema}"."Clients", unnest(ARRAY['openid','profile','email']) s
                 WHERE "ClientId" = '{id}';"#
        ))
        .await
        .unwrap();
    }
    (name, db)
}

fn deps_with(policy: TenantPolicy) -> ProviderDeps {
    let mut d = ProviderDeps::new(Arc::new(Metrics::new()), Duration::from_secs(10));
    d.http = Arc::new(HttpClients::with_policy(Duration::from_secs(10), policy));
    d
}

fn spec(client_id: &str, schema: Option<&str>) -> DuendeSpec {
    let mut db = json!({"engine": "PostgreSQL"});
    if let Some(s) = schema {
        db["schema"] = json!(s);
    }
    serde_json::from_value(
        json!({"clientId": client_id, "credentialsSecret": "duende-db", "database": db}),
    )
    .unwrap()
}

fn creds(conn: &str) -> Credentials {
    Credentials::new(
        "duende-db",
        "1",
        BTreeMap::from([("connection-string".to_string(), conn.as_bytes().to_vec())]),
    )
}

fn provider(
    conn: &str,
    client_id: &str,
    schema: Option<&str>,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    providers::duende::connect(
        &spec(client_id, schema),
        Some(creds(conn)),
        &deps_with(TenantPolicy::default()),
    )
}

fn desired() -> DesiredSettings {
    DesiredSettings {
        offline_access: true,
        lifetime: Some(Duration::from_secs(90 * 86_400)),
        idle_timeout: Some(Duration::from_secs(30 * 86_400)),
        rotation: Some(Rotation::Reuse),
        access_token_lifetime: Some(Duration::from_secs(900)),
    }
}

/// The row as PostgreSQL renders it, and its `xmin` (which changes with every update).
async fn row(db: &tokio_postgres::Client, schema: &str, client_id: &str) -> (String, String) {
    let r = db
        .query_one(
            &format!(
                r#"SELECT row_to_json(c)::text, c.xmin::text FROM "{schema}"."Clients" c WHERE "ClientId" = $1"#
            ),
            &[&client_id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

async fn children(db: &tokio_postgres::Client, schema: &str) -> String {
    db.query_one(
        &format!(
            r#"SELECT (SELECT json_agg(g ORDER BY "Id") FROM "{schema}"."ClientGrantTypes" g)::text ||
                      (SELECT json_agg(s ORDER BY "Id") FROM "{schema}"."ClientScopes" s)::text"#
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

const OWNED: [&str; 7] = [
    "AllowOfflineAccess",
    "AbsoluteRefreshTokenLifetime",
    "SlidingRefreshTokenLifetime",
    "RefreshTokenUsage",
    "RefreshTokenExpiration",
    "AccessTokenLifetime",
    "Updated",
];

fn without_owned(row: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(row).unwrap();
    for k in OWNED {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_coders_row_and_leaves_every_other_byte_alone() {
    let (name, db) = fresh_db("public").await;
    let conn = conn_string(&name);
    let (coder_before, _) = row(&db, "public", "coder").await;
    let (staging_before, staging_xmin) = row(&db, "public", "coder-staging").await;
    let children_before = children(&db, "public").await;

    let p_deps = deps_with(TenantPolicy::default());
    let p = providers::duende::connect(&spec("coder", None), Some(creds(&conn)), &p_deps).unwrap();
    let plan = p.observe_plan(&desired()).await.unwrap();
    assert_eq!(plan.changes().len(), 6, "{:?}", plan.changes());
    assert!(
        plan.observation
            .findings
            .iter()
            .any(|f| f.reason == "DuendeConfigurationCache" && !f.blocking)
    );
    let applied = p.apply(&plan).await.unwrap();
    assert_eq!(applied.actions.len(), 1);
    assert!(applied.actions[0].contains("AddConfigurationStoreCache"));
    assert_eq!(applied.observation.settings.offline_access, Some(true));

    let r = db
        .query_one(
            r#"SELECT "AllowOfflineAccess", "AbsoluteRefreshTokenLifetime", "SlidingRefreshTokenLifetime",
                      "RefreshTokenUsage", "RefreshTokenExpiration", "AccessTokenLifetime",
                      "Updated" > timezone('utc', now()) - interval '5 minutes'
               FROM "Clients" WHERE "ClientId" = 'coder'"#,
            &[],
        )
        .await
        .unwrap();
    assert!(r.get::<_, bool>(0));
    assert_eq!(r.get::<_, i32>(1), 90 * 86_400);
    assert_eq!(r.get::<_, i32>(2), 30 * 86_400);
    assert_eq!(r.get::<_, i32>(3), 0, "ReUse");
    assert_eq!(r.get::<_, i32>(4), 0, "Sliding");
    assert_eq!(r.get::<_, i32>(5), 900);
    assert!(r.get::<_, bool>(6), "Updated is set, in UTC");
    // Every other column of Coder's row, the other client's row and every child row unchanged.
    let (coder_after, coder_xmin) = row(&db, "public", "coder").await;
    assert_eq!(without_owned(&coder_after), without_owned(&coder_before));
    assert_eq!(
        row(&db, "public", "coder-staging").await,
        (staging_before, staging_xmin)
    );
    assert_eq!(children(&db, "public").await, children_before);

    // Database calls are counted like any identity-provider call.
    let m = p_deps.metrics.encode();
    assert!(
        m.lines()
            .any(|l| l.contains("provider=\"duende\"")
                && l.contains("operation=\"db_update_client\"")),
        "{m}"
    );

    // A second pass writes nothing: the row version is the same.
    let again = provider(&conn, "coder", None)
        .unwrap()
        .converge(&desired())
        .await
        .unwrap();
    assert!(again.actions.is_empty());
    assert!(again.observation.findings.is_empty(), "{again:?}");
    assert_eq!(row(&db, "public", "coder").await.1, coder_xmin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_in_the_database_is_restored_in_a_custom_schema() {
    let (name, db) = fresh_db("identity").await;
    let conn = conn_string(&name);
    let p = provider(&conn, "coder", Some("identity")).unwrap();
    p.converge(&desired()).await.unwrap();
    db.batch_execute(
        r#"UPDATE identity."Clients" SET "AllowOfflineAccess" = false, "RefreshTokenUsage" = 1,
           "Description" = 'edited by hand' WHERE "ClientId" = 'coder'"#,
    )
    .await
    .unwrap();
    let (drifted, _) = row(&db, "identity", "coder").await;
    let plan = p.observe_plan(&desired()).await.unwrap();
    let settings: Vec<&str> = plan.changes().iter().map(|c| c.setting.as_str()).collect();
    assert_eq!(settings, ["AllowOfflineAccess", "RefreshTokenUsage"]);
    p.apply(&plan).await.unwrap();
    let (restored, _) = row(&db, "identity", "coder").await;
    assert_eq!(without_owned(&restored), without_owned(&drifted));
    let v: serde_json::Value = serde_json::from_str(&restored).unwrap();
    assert_eq!(v["AllowOfflineAccess"], json!(true));
    assert_eq!(v["RefreshTokenUsage"], json!(0));
    assert_eq!(v["Description"], json!("edited by hand"));

    // A row changed between the plan and the write is not written.
    db.batch_execute(
        r#"UPDATE identity."Clients" SET "AllowOfflineAccess" = false WHERE "ClientId" = 'coder'"#,
    )
    .await
    .unwrap();
    let plan = p.observe_plan(&desired()).await.unwrap();
    db.batch_execute(r#"UPDATE identity."Clients" SET "AllowOfflineAccess" = true, "AccessTokenLifetime" = 60 WHERE "ClientId" = 'coder'"#)
        .await
        .unwrap();
    let err = p.apply(&plan).await.unwrap_err();
    assert!(matches!(err, ProviderError::Protocol { .. }), "{err}");
    assert_eq!(
        db.query_one(
            r#"SELECT "AccessTokenLifetime" FROM identity."Clients" WHERE "ClientId" = 'coder'"#,
            &[]
        )
        .await
        .unwrap()
        .get::<_, i32>(0),
        60
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_to_fix_and_never_the_connection_string() {
    let (name, _db) = fresh_db("public").await;
    let conn = conn_string(&name);
    let err = provider(&conn, "nobody-uses-this", None)
        .unwrap()
        .converge(&desired())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::ClientNotFound { .. }), "{err}");
    let err = provider(&conn, "coder", Some("nope"))
        .unwrap()
        .converge(&desired())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("schema"), "{err}");
    let wrong = conn.replace(PASSWORD, "not-the-password");
    let err = provider(&wrong, "coder", None)
        .unwrap()
        .converge(&desired())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::AuthenticationFailed { .. }),
        "{err}"
    );
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(
            !shown.contains("not-the-password") && !shown.contains(PASSWORD),
            "{shown}"
        );
    }
    let err = provider("host=127.0.0.1 port=nope", "coder", None)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidSecret { .. }), "{err}");
    assert!(!err.to_string().contains("port=nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_checks_the_server_against_ca_crt() {
    let (name, db) = fresh_db("public").await;
    let tls = conn_string(&name).replace("sslmode=disable", "sslmode=require");
    let with_ca = |ca: &str| {
        Credentials::new(
            "duende-db",
            "1",
            BTreeMap::from([
                ("connection-string".to_string(), tls.as_bytes().to_vec()),
                ("ca.crt".to_string(), ca.as_bytes().to_vec()),
            ]),
        )
    };
    let deps = deps_with(TenantPolicy::default());
    let p = providers::duende::connect(&spec("coder", None), Some(with_ca(&server().ca)), &deps)
        .unwrap();
    p.converge(&desired()).await.unwrap();
    let r = db
        .query_one(
            r#"SELECT "AllowOfflineAccess" FROM "Clients" WHERE "ClientId" = 'coder'"#,
            &[],
        )
        .await
        .unwrap();
    assert!(r.get::<_, bool>(0));
    // A server certificate that does not chain to ca.crt is refused.
    let p =
        providers::duende::connect(&spec("coder", None), Some(with_ca(TEST_CA)), &deps).unwrap();
    let err = p.converge(&desired()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn without_tls_only_loopback_and_only_when_insecure_is_allowed() {
    let connect = |conn: &str, policy: TenantPolicy| {
        providers::duende::connect(&spec("coder", None), Some(creds(conn)), &deps_with(policy))
            .map(|_| ())
    };
    let remote = format!("postgresql://u:{PASSWORD}@db.example.com/identity?sslmode=disable");
    let err = connect(&remote, TenantPolicy::default()).unwrap_err();
    assert!(
        matches!(err, ProviderError::Unsupported { .. }) && err.to_string().contains("TLS"),
        "{err}"
    );
    assert!(!err.to_string().contains(PASSWORD));
    let local = format!("postgresql://u:{PASSWORD}@127.0.0.1:5432/identity");
    assert!(connect(&local, TenantPolicy::default()).is_ok());
    assert!(connect(&local, TenantPolicy::strict()).is_err());
    // TLS asked for without a CA to check the server against.
    let tls = format!("postgresql://u:{PASSWORD}@db.example.com/identity?sslmode=require");
    let err = connect(&tls, TenantPolicy::default()).unwrap_err();
    assert!(err.to_string().contains("ca.crt"), "{err}");
    // The Kubernetes API is never a database either.
    let k8s = format!("postgresql://u:{PASSWORD}@kubernetes.default.svc/identity?sslmode=require");
    let mut c = creds(&k8s);
    c = Credentials::new(
        &c.secret_name,
        "1",
        BTreeMap::from([
            ("connection-string".to_string(), k8s.as_bytes().to_vec()),
            ("ca.crt".to_string(), TEST_CA.as_bytes().to_vec()),
        ]),
    );
    let err = providers::duende::connect(
        &spec("coder", None),
        Some(c),
        &deps_with(TenantPolicy::default()),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("Kubernetes API"), "{err}");
}

/// A self-signed CA certificate (only parsed, never used to connect).
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBdjCCAR2gAwIBAgIUE23JUoRz+okVHggYnyw+4lD+0v0wCgYIKoZIzj0EAwIw
ETEPMA0GA1UEAwwGdGVzdGNhMB4XDTI2MTEyOTE4NDgwN1oXDTM2MTEyNjE4NDgw
N1owETEPMA0GA1UEAwwGdGVzdGNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
SejGYIi6W+uE1OxVtbySRN9LQpy+BNaiFXuWITrO60cZOvSj3Otwj4v3Gy+VCf5J
+bPxjwJ6Yb9ETmBhHORdyKNTMFEwHQYDVR0OBBYEFBEMImCgJmawrxX/fApuLxUr
OKtIMB8GA1UdIwQYMBaAFBEMImCgJmawrxX/fApuLxUrOKtIMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgD1EwV3Hbk2EInL7pQu0rQo8IypoDnyca
ecVoG8d9ruYCIAkmp62HQk4YREjvJykVaU7ox8Se4fijol+SmE5FFWNK
-----END CERTIFICATE-----
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_converges_through_the_controller_and_a_second_pass_writes_nothing() {
    let (name, db) = fresh_db("public").await;
    let (staging_before, staging_xmin) = row(&db, "public", "coder-staging").await;
    let sb = common::cluster().await;
    sandbox::create_secret(
        &sb.client,
        "duende-db",
        &BTreeMap::from([("connection-string".to_string(), conn_string(&name))]),
    )
    .await
    .unwrap();
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let mut policy = sandbox::example_policy(
        "coder",
        json!({"duende": {"clientId": "coder", "credentialsSecret": "duende-db",
                          "database": {"engine": "PostgreSQL"}}}),
    );
    policy["spec"]["refreshTokens"] = sandbox::example_refresh_tokens(SandboxProvider::Duende);
    sandbox::create_policy(&sb.client, policy).await.unwrap();
    let ready = common::wait_ready(&sb.client, "coder").await;
    let seen = ready.status.clone().unwrap().identity_provider.unwrap();
    assert_eq!(seen.offline_access, Some(true));
    assert_eq!(seen.idle_timeout.as_deref(), Some("720h"));
    let (scopes, _) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(
        scopes.as_deref(),
        Some("openid,profile,email,offline_access,groups")
    );
    let r = db
        .query_one(
            r#"SELECT "AllowOfflineAccess", "RefreshTokenUsage", "RefreshTokenExpiration",
                      "AbsoluteRefreshTokenLifetime", "SlidingRefreshTokenLifetime"
               FROM "Clients" WHERE "ClientId" = 'coder'"#,
            &[],
        )
        .await
        .unwrap();
    assert!(r.get::<_, bool>(0));
    assert_eq!(
        (
            r.get::<_, i32>(1),
            r.get::<_, i32>(2),
            r.get::<_, i32>(3),
            r.get::<_, i32>(4)
        ),
        (0, 0, 90 * 86_400, 30 * 86_400)
    );
    // The other client's row is byte for byte (and version for version) what it was.
    assert_eq!(
        row(&db, "public", "coder-staging").await,
        (staging_before, staging_xmin)
    );

    // A restarted controller finds it converged: Coder's row is not written again.
    let coder_xmin = row(&db, "public", "coder").await.1;
    let (sim, client) = (sb.kube.clone(), sb.client.clone());
    sb.stop_controller_only().await;
    let k_before = sim.counters();
    let sb = Sandbox::start_controller(sim.clone(), client.clone());
    let start = Instant::now();
    while !sb
        .metrics
        .encode()
        .lines()
        .any(|l| l.starts_with("oidc_refresh_reconciles_total ") && !l.ends_with(" 0"))
    {
        assert!(start.elapsed() < Duration::from_secs(30), "no pass");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(row(&db, "public", "coder").await.1, coder_xmin);
    assert_eq!(sim.counters().diff(&k_before).writes(), 0);
    sb.stop().await;
}
