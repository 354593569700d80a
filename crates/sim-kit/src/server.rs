//! A loopback HTTP(S) server: bind, serve an axum router, stop.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

/// A bound port, not yet serving. Bind first, so that the simulator's state can hold its base
/// URL before the router is built, then [`serve`](Self::serve).
pub struct Listener {
    tcp: TcpListener,
    addr: SocketAddr,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener {
    /// Binds `addr` (e.g. [`LOOPBACK`](crate::LOOPBACK)) for http.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let tcp = TcpListener::bind(addr).await?;
        let addr = tcp.local_addr()?;
        Ok(Listener {
            tcp,
            addr,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// Binds `addr` for https with `identity`, or for http when it is `None`.
    #[cfg(feature = "tls")]
    pub async fn bind_tls(
        addr: SocketAddr,
        identity: Option<&TlsIdentity>,
    ) -> std::io::Result<Self> {
        let tls = identity.map(tls_acceptor).transpose()?;
        let mut l = Self::bind(addr).await?;
        l.tls = tls;
        Ok(l)
    }

    /// The address bound (with the port chosen).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>` or `https://<addr>`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr)
    }

    fn scheme(&self) -> &'static str {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return "https";
        }
        "http"
    }

    /// Serves `app` on the current tokio runtime until [`Serving::shutdown`].
    pub fn serve(self, app: Router) -> Serving {
        let (tx, rx) = oneshot::channel::<()>();
        let stop = async move {
            let _ = rx.await;
        };
        #[cfg(feature = "tls")]
        if let Some(acceptor) = self.tls {
            let (accept_loop, listener) = tls::accept(self.tcp, self.addr, acceptor);
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await;
            });
            return Serving::new(tx, task, Some(accept_loop));
        }
        let tcp = self.tcp;
        let task = tokio::spawn(async move {
            let _ = axum::serve(tcp, app).with_graceful_shutdown(stop).await;
        });
        Serving::new(tx, task, None)
    }
}

/// A server running; [`shutdown`](Self::shutdown) stops it.
pub struct Serving {
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    accept_loop: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Serving {
    fn new(
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
        accept: Option<JoinHandle<()>>,
    ) -> Self {
        Serving {
            stop: std::sync::Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
            accept_loop: std::sync::Mutex::new(accept),
        }
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server (a second call,
    /// also a concurrent one, returns once it has stopped).
    pub async fn shutdown(&self) {
        if let Some(accept_loop) = crate::lock(&self.accept_loop).take() {
            accept_loop.abort();
        }
        if let Some(tx) = crate::lock(&self.stop).take() {
            let _ = tx.send(());
        }
        let mut task = self.task.lock().await;
        if let Some(task) = task.take() {
            let _ = task.await;
        }
    }
}

/// A server certificate chain (DER, leaf first) and its PKCS#8 private key (DER).
#[cfg(feature = "tls")]
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    /// Certificate chain, leaf first.
    pub cert_chain_der: Vec<Vec<u8>>,
    /// PKCS#8 private key.
    pub key_der: Vec<u8>,
}

#[cfg(feature = "tls")]
fn tls_acceptor(id: &TlsIdentity) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> = id
        .cert_chain_der
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.clone()))
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(id.key_der.clone().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(feature = "tls")]
mod tls {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::server::TlsStream;

    /// Accepted TLS connections, handed to axum.
    pub(super) struct TlsListener {
        rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
        addr: SocketAddr,
    }

    impl axum::serve::Listener for TlsListener {
        type Io = TlsStream<TcpStream>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.rx.recv().await {
                Some(conn) => conn,
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            Ok(self.addr)
        }
    }

    /// Starts the accept loop: each connection's handshake runs on its own task (bounded to
    /// 10 s), so a client that never finishes one holds up no other.
    pub(super) fn accept(
        tcp: TcpListener,
        addr: SocketAddr,
        acceptor: TlsAcceptor,
    ) -> (JoinHandle<()>, TlsListener) {
        let (conn_tx, conn_rx) = mpsc::channel(64);
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let conn_tx = conn_tx.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls)) = handshake.await {
                        let _ = conn_tx.send((tls, peer)).await;
                    }
                });
            }
        });
        (accept_loop, TlsListener { rx: conn_rx, addr })
    }
}
