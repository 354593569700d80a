//! The configuration-database backend: Duende's EF Core `ConfigurationDbContext` tables on
//! PostgreSQL (Npgsql), written directly.
//!
//! The policy's Secret holds `connection-string` (a PostgreSQL URI or key=value string, the only
//! place the credentials are; never logged or shown) and optionally `ca.crt`. TLS (rustls) is
//! used when the connection string asks for it (`sslmode=require`) or `ca.crt` is given, and then
//! the server's certificate must chain to `ca.crt`. Without TLS the operator connects only to a
//! loopback address, and only when it runs with `--allow-insecure-http` (the same rule as plain
//! http), because the password would cross the network in clear.
//!
//! Reads select the refresh columns of the `Clients` row whose `ClientId` is Coder's. A write
//! runs in one transaction: the row is selected again `FOR UPDATE`, planned again (a row changed
//! since the plan is not written), and only `AllowOfflineAccess`, `AbsoluteRefreshTokenLifetime`,
//! `SlidingRefreshTokenLifetime`, `RefreshTokenUsage`, `RefreshTokenExpiration`,
//! `AccessTokenLifetime` and `Updated` are updated. Then the row is read back. Hosts that register
//! `AddConfigurationStoreCache` keep serving the cached client until the cache expires (15 min by
//! default): the plan says so.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use tokio_postgres::config::{Host, SslMode};

use super::model::{Plan, Refresh};
use super::{Backend, Duende, KIND, recheck, target};
use crate::crd::DuendeDatabaseSpec;
use crate::providers::{
    Credentials, DesiredSettings, Finding, IdentityProvider, ProviderDeps, ProviderError,
    missing_credentials,
};

/// Finding: the change is served after the configuration store cache expires.
pub const CONFIGURATION_CACHE: &str = "DuendeConfigurationCache";

const COLUMNS: &str = r#""Id", "AllowOfflineAccess", "AbsoluteRefreshTokenLifetime", "SlidingRefreshTokenLifetime", "RefreshTokenUsage", "RefreshTokenExpiration", "AccessTokenLifetime""#;

/// Builds the database backend.
pub fn connect(
    client_id: &str,
    spec: &DuendeDatabaseSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let credentials = credentials.ok_or_else(|| missing_credentials(KIND))?;
    let raw = credentials.require(KIND, &["connection-string"])?[0];
    let secret = credentials.secret_name.clone();
    let mut config = tokio_postgres::Config::from_str(raw.expose_secret().trim()).map_err(|_| {
        ProviderError::InvalidSecret {
            provider: KIND,
            detail: format!(
                "connection-string in Secret {secret:?} is not a PostgreSQL connection URI \
                 (postgresql://user:password@host:5432/database?sslmode=require) or key=value string"
            ),
        }
    })?;
    let schema = spec.schema.as_deref().unwrap_or("public");
    if schema.is_empty()
        || !schema.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "spec.provider.duende.database.schema {schema:?} is not a plain identifier"
            ),
        });
    }
    let ca = credentials
        .get("ca.crt")
        .map(|c| c.expose_secret().to_string());
    let tls = match (config.get_ssl_mode(), &ca) {
        (SslMode::Disable, Some(_)) => {
            return Err(ProviderError::InvalidSecret {
                provider: KIND,
                detail: format!(
                    "Secret {secret:?} has ca.crt but its connection-string says sslmode=disable"
                ),
            });
        }
        (SslMode::Disable, None) => None,
        // `prefer` (the default) without a CA: plain, under the loopback rule below.
        (SslMode::Prefer, None) => None,
        (_, None) => {
            return Err(ProviderError::InvalidSecret {
                provider: KIND,
                detail: format!(
                    "connection-string in Secret {secret:?} asks for TLS: put the PEM certificate of the CA that issued \
                     the database server's certificate under ca.crt in the same Secret"
                ),
            });
        }
        (_, Some(pem)) => Some(tls_connector(pem)?),
    };
    if tls.is_some() {
        config.ssl_mode(SslMode::Require);
    } else {
        config.ssl_mode(SslMode::Disable);
    }
    config.connect_timeout(deps.http.timeout().min(Duration::from_secs(10)));
    config.application_name("oidc-refresh-operator");
    check_hosts(&config, tls.is_some(), deps)?;
    Ok(Arc::new(Duende(Database {
        client_id: client_id.to_string(),
        table: format!("\"{schema}\".\"Clients\""),
        config,
        tls,
        timeout: deps.http.timeout(),
        metrics: deps.metrics.clone(),
        secret_name: secret,
    })))
}

fn tls_connector(pem: &str) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ProviderError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |detail: String| ProviderError::InvalidSecret {
        provider: KIND,
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| bad(format!("ca.crt is not a PEM certificate bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("ca.crt holds a certificate rustls cannot use: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("ca.crt holds no PEM certificate".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Applies the operator's tenant policy to the database hosts, as to any identity-provider URL:
/// plain connections only to loopback with `--allow-insecure-http`; never the Kubernetes API,
/// metadata services or hosts outside `--allowed-idp-hosts`.
fn check_hosts(
    config: &tokio_postgres::Config,
    tls: bool,
    deps: &ProviderDeps,
) -> Result<(), ProviderError> {
    let ports = config.get_ports();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let name = match host {
            Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            Host::Unix(_) => {
                return Err(ProviderError::Unsupported {
                    provider: KIND,
                    detail: "connection-string names a Unix socket; give the database server's host name".into(),
                });
            }
        };
        let shown = if name.contains(':') {
            format!("[{name}]")
        } else {
            name.clone()
        };
        let scheme = if tls { "https" } else { "http" };
        let url = reqwest::Url::parse(&format!("{scheme}://{shown}:{port}/")).map_err(|_| {
            ProviderError::InvalidSecret {
                provider: KIND,
                detail: "connection-string names a host that is not a valid host name".into(),
            }
        })?;
        if let Err(why) = deps.http.policy().check_url(&url) {
            let why = why
                .replace("plain http", "a connection without TLS")
                .replace(
                    "use https",
                    "use TLS (sslmode=require with ca.crt in the Secret)",
                );
            return Err(ProviderError::Unsupported {
                provider: KIND,
                detail: format!("the operator will not connect to the database: {why}"),
            });
        }
    }
    if config.get_hosts().is_empty() {
        return Err(ProviderError::InvalidSecret {
            provider: KIND,
            detail: "connection-string names no host".into(),
        });
    }
    Ok(())
}

/// What `observe` read: the row's key and its refresh columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// `Clients.Id`.
    pub id: i32,
    /// The refresh columns.
    pub refresh: Refresh,
}

/// The database backend for one policy.
pub struct Database {
    client_id: String,
    table: String,
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    timeout: Duration,
    metrics: Arc<crate::metrics::Metrics>,
    secret_name: String,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuendeDatabase")
            .field("client_id", &self.client_id)
            .field("table", &self.table)
            .field("secret_name", &self.secret_name)
            .finish_non_exhaustive()
    }
}

/// What a database error means, without the connection string.
fn db_error(operation: &str, secret: &str, e: &tokio_postgres::Error) -> ProviderError {
    use tokio_postgres::error::SqlState;
    let detail = match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => {
            // Connection-level errors: the message names what failed, never the password.
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(cause) = src {
                s.push_str(&format!(": {cause}"));
                src = cause.source();
            }
            s
        }
    };
    match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "the database refused the user or password of connection-string in Secret {secret:?}: {detail}"
                ),
            }
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => ProviderError::Forbidden {
            provider: KIND,
            operation: operation.into(),
            detail: format!("{detail}; the database user needs SELECT and UPDATE on \"Clients\""),
        },
        Some(c)
            if *c == SqlState::UNDEFINED_TABLE
                || *c == SqlState::UNDEFINED_COLUMN
                || *c == SqlState::INVALID_SCHEMA_NAME =>
        {
            ProviderError::ClientNotFound {
                provider: KIND,
                what: "Duende's Clients table".into(),
                detail: format!(
                    "{detail}; the database must hold Duende's ConfigurationDbContext schema (set \
                     spec.provider.duende.database.schema when the host sets DefaultSchema)"
                ),
            }
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => ProviderError::ClientNotFound {
            provider: KIND,
            what: "the database".into(),
            detail: detail.clone(),
        },
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            ProviderError::Unreachable {
                provider: KIND,
                operation: operation.into(),
                detail,
            }
        }
        Some(_) => ProviderError::Rejected {
            provider: KIND,
            operation: operation.into(),
            detail,
        },
        None => ProviderError::Unreachable {
            provider: KIND,
            operation: operation.into(),
            detail,
        },
    }
}

impl Database {
    /// Runs one database call within the timeout, counted in the provider-call metrics.
    async fn timed<T>(
        &self,
        operation: &str,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, ProviderError> {
        let metric = match operation {
            "connect to the database" => "db_connect",
            "read the client" => "db_read_client",
            _ => "db_update_client",
        };
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| db_error(operation, &self.secret_name, &e)),
            Err(_) => Err(ProviderError::Unreachable {
                provider: KIND,
                operation: operation.into(),
                detail: format!("no answer within {}s", self.timeout.as_secs()),
            }),
        };
        let outcome = match &result {
            Ok(_) => "success",
            Err(ProviderError::AuthenticationFailed { .. }) => "unauthorized",
            Err(ProviderError::Forbidden { .. }) => "forbidden",
            Err(ProviderError::ClientNotFound { .. }) => "not_found",
            Err(ProviderError::Unreachable { .. }) => "network_error",
            Err(_) => "client_error",
        };
        self.metrics
            .provider_call(KIND.as_str(), metric, outcome, started.elapsed());
        result
    }

    async fn client(&self) -> Result<tokio_postgres::Client, ProviderError> {
        let what = "connect to the database";
        match &self.tls {
            Some(tls) => {
                let (client, conn) = self.timed(what, self.config.connect(tls.clone())).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(client)
            }
            None => {
                let (client, conn) = self
                    .timed(what, self.config.connect(tokio_postgres::NoTls))
                    .await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(client)
            }
        }
    }

    fn snapshot(&self, rows: &[tokio_postgres::Row]) -> Result<Snapshot, ProviderError> {
        let [row] = rows else {
            return Err(if rows.is_empty() {
                ProviderError::ClientNotFound {
                    provider: KIND,
                    what: target(&self.client_id),
                    detail: format!(
                        "{} has no row with this ClientId; spec.provider.duende.clientId must be the ClientId Coder uses \
                         as CODER_OIDC_CLIENT_ID (exact). The operator never creates clients",
                        self.table
                    ),
                }
            } else {
                ProviderError::Protocol {
                    provider: KIND,
                    operation: "read the client".into(),
                    detail: format!("{} rows have ClientId {:?}", rows.len(), self.client_id),
                }
            });
        };
        let bad = |e: tokio_postgres::Error| ProviderError::Protocol {
            provider: KIND,
            operation: "read the client".into(),
            detail: format!("a refresh column of Clients has an unexpected type: {e}"),
        };
        let int = |i: usize| row.try_get::<_, i32>(i).map(i64::from).map_err(bad);
        Ok(Snapshot {
            id: row.try_get(0).map_err(bad)?,
            refresh: Refresh {
                allow_offline_access: row.try_get(1).map_err(bad)?,
                absolute: int(2)?,
                sliding: int(3)?,
                usage: int(4)?,
                expiration: int(5)?,
                access_token_lifetime: int(6)?,
            },
        })
    }

    /// One transaction: the row locked, planned again, the refresh columns updated.
    async fn update(&self, p: &Plan, desired: &DesiredSettings) -> Result<(), ProviderError> {
        let what = "update the client";
        let mut db = self.client().await?;
        let tx = self.timed(what, db.transaction()).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE \"ClientId\" = $1 FOR UPDATE",
            self.table
        );
        let rows = self
            .timed(what, tx.query(sql.as_str(), &[&self.client_id]))
            .await?;
        let fresh = self.snapshot(&rows)?;
        let next = recheck(&self.client_id, p, self.plan_of(&fresh, desired)?)?;
        let int = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
        let sql = format!(
            "UPDATE {} SET \"AllowOfflineAccess\" = $2, \"AbsoluteRefreshTokenLifetime\" = $3, \
             \"SlidingRefreshTokenLifetime\" = $4, \"RefreshTokenUsage\" = $5, \"RefreshTokenExpiration\" = $6, \
             \"AccessTokenLifetime\" = $7, \"Updated\" = timezone('utc', now()) WHERE \"Id\" = $1",
            self.table
        );
        let n = self
            .timed(
                what,
                tx.execute(
                    sql.as_str(),
                    &[
                        &fresh.id,
                        &next.allow_offline_access,
                        &int(next.absolute),
                        &int(next.sliding),
                        &int(next.usage),
                        &int(next.expiration),
                        &int(next.access_token_lifetime),
                    ],
                ),
            )
            .await?;
        if n != 1 {
            return Err(ProviderError::Protocol {
                provider: KIND,
                operation: what.into(),
                detail: format!("the update matched {n} rows, not 1; nothing was committed"),
            });
        }
        self.timed(what, tx.commit()).await
    }
}

#[async_trait]
impl Backend for Database {
    type Snapshot = Snapshot;

    fn client_id(&self) -> &str {
        &self.client_id
    }

    async fn read(&self) -> Result<Snapshot, ProviderError> {
        let db = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE \"ClientId\" = $1",
            self.table
        );
        let rows = self
            .timed(
                "read the client",
                db.query(sql.as_str(), &[&self.client_id]),
            )
            .await?;
        self.snapshot(&rows)
    }

    fn refresh(&self, snap: &Snapshot) -> Result<Refresh, ProviderError> {
        Ok(snap.refresh)
    }

    fn write_findings(&self) -> Vec<Finding> {
        vec![Finding {
            reason: CONFIGURATION_CACHE,
            message: format!(
                "{} is changed in the configuration database: IdentityServer hosts that use AddConfigurationStoreCache \
                 serve the cached client until the cache expires (Caching.ClientStoreExpiration, 15 minutes by \
                 default), so Coder's new scopes may fail with invalid_scope until then",
                target(&self.client_id)
            ),
            blocking: false,
            expires_at: None,
        }]
    }

    async fn write(
        &self,
        planned: &Plan,
        desired: &DesiredSettings,
    ) -> Result<String, ProviderError> {
        self.update(planned, desired).await?;
        Ok(format!(
            "updated {} in the configuration database ({}); hosts with AddConfigurationStoreCache serve it after their \
             cache expires (15 minutes by default)",
            target(&self.client_id),
            planned.observation.changes_line()
        ))
    }
}
