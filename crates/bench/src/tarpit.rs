//! The tarpit identity-provider host of scenario 5: a loopback listener that accepts every
//! connection and answers one byte a second: a response head (promising a 1,000-byte JSON body,
//! under every body cap, so nothing can reject it early), then the body's bytes, never finishing
//! within a minute, and keeps the connection open until the client closes it (or the tarpit is
//! stopped). Only the client's own timeout ends a call. It reads and discards whatever the client sends, so a closed connection is
//! noticed at once and the count of open connections is the count the client holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";

#[derive(Default)]
struct Stats {
    open: AtomicU64,
    max_open: AtomicU64,
    accepted: AtomicU64,
}

pub struct Tarpit {
    url: String,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
}

impl Tarpit {
    /// Listens on a free loopback port (a host:port of its own, so the operator's per-host
    /// limits treat it apart from the Keycloak simulator).
    pub async fn start() -> std::io::Result<Tarpit> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = watch::channel(false);
        let (st, mut rx) = (stats.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = rx.changed() => return,
                    accepted = listener.accept() => {
                        let Ok((sock, _)) = accepted else { continue };
                        st.accepted.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(hold(sock, st.clone(), stop_rx.clone()));
                    }
                }
            }
        });
        Ok(Tarpit { url, stats, stop })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connections open at once, at most, since the start.
    pub fn max_open(&self) -> u64 {
        self.stats.max_open.load(Ordering::Relaxed)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One connection: one byte a second (the head's, then the body's), until the client closes, a
/// write fails, or the tarpit stops. The head alone takes 73 s.
async fn hold(sock: TcpStream, stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
    stats.max_open.fetch_max(open, Ordering::Relaxed);
    let mut pending: &[u8] = HEAD;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            ready = sock.readable() => {
                if ready.is_err() {
                    break;
                }
                match sock.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            _ = tick.tick() => {
                // The first byte goes out at once (the first tick), then one a second.
                let chunk: &[u8] = if pending.is_empty() { b" " } else { &pending[..1] };
                match sock.try_write(chunk) {
                    Ok(n) if !pending.is_empty() => pending = &pending[n..],
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Connections are counted while the client holds them, the response head starts at once,
    /// and a closed connection is no longer counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_the_connections_the_client_holds() {
        let t = Tarpit::start().await.unwrap();
        let addr = t.url().trim_start_matches("http://").to_string();
        let (a, b) = tokio::task::spawn_blocking(move || {
            let connect = || {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut first = [0u8; 1];
                s.read_exact(&mut first).unwrap();
                assert_eq!(&first, b"H", "the response head starts at once");
                s
            };
            (connect(), connect())
        })
        .await
        .unwrap();
        assert_eq!(t.accepted(), 2);
        assert_eq!(t.max_open(), 2);
        drop((a, b));
        for _ in 0..500 {
            if t.stats.open.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(t.stats.open.load(Ordering::Relaxed), 0);
        assert_eq!(t.max_open(), 2);
    }
}
