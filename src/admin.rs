//! Admin HTTP server: `/healthz` (process alive), `/readyz` (the controllers' policy caches have
//! synced), `/metrics`.
//!
//! The port is reachable from the pod network, so it defends itself: at most
//! [`AdminLimits::max_connections`] connections at once (more are closed on accept), a
//! connection that sends or receives nothing for [`AdminLimits::idle_timeout`] is closed (a
//! half-open or idle socket, a client that never finishes its request headers), and no connection
//! lives longer than [`AdminLimits::max_age`] (a client trickling bytes).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// The admin routes.
pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, ready })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "controller not running")
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Limits of the admin server's connections.
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A connection with no bytes read or written for this long is closed.
    pub idle_timeout: Duration,
    /// No connection lives longer than this.
    pub max_age: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 64,
            idle_timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(60),
        }
    }
}

/// Serves the admin routes on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin server listening");
    serve_on(listener, AdminLimits::default(), metrics, ready, shutdown).await
}

/// Serves the admin routes on `listener` with `limits` until `shutdown` resolves.
pub async fn serve_on(
    listener: TcpListener,
    limits: AdminLimits,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = Limited {
        inner: listener,
        slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        limits,
    };
    axum::serve(listener, router(metrics, ready))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A listener that caps connections and wraps them in [`Guarded`].
struct Limited {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    limits: AdminLimits,
}

impl axum::serve::Listener for Limited {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => return (Guarded::new(stream, permit, self.limits), addr),
                Err(_) => {
                    tracing::debug!(%addr, "admin connection limit reached; closing");
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that is closed when idle for too long or too old, and frees its slot when
/// dropped.
struct Guarded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    expires: Instant,
}

impl Guarded {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, limits: AdminLimits) -> Self {
        let now = Instant::now();
        Guarded {
            stream,
            _permit: permit,
            idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            idle_timeout: limits.idle_timeout,
            expires: now + limits.max_age,
        }
    }

    fn touched(&mut self) {
        let next = (Instant::now() + self.idle_timeout).min(self.expires);
        self.idle.as_mut().reset(next);
    }

    /// `Ready(Err)` once the connection has been idle or alive too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "admin connection idle or too old",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touched();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.expired(cx).map(Err),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.touched();
                Poll::Ready(r)
            }
            Poll::Pending => self.expired(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Pending => self.expired(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
