//! The accept loop both HTTP listeners (health and secrets) run: HTTP/1 over hyper, hardened
//! by `Limits` (a header read timeout, a cap on header size, on concurrent connections, on
//! connections per remote address and on a connection's lifetime, keep-alive allowed), stopped
//! by the caller's `CancellationToken`. Connections from this host to itself (a peer whose
//! address is the local address: the kubelet's exec probes) draw on a reserve of their own, so
//! they are served while the port is flooded from the network.
//!
//! Handlers are plain functions of the request head: neither listener reads a request body or
//! awaits anything to answer, so a handler never holds a connection open on its own account.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Every response body: the listeners answer from memory, in one piece.
pub type Body = Full<Bytes>;

/// What one client may cost the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a client gets to send a complete request head, also when a kept-alive connection
    /// sits idle before its next request; the connection is closed after it.
    pub header_read_timeout: Duration,
    /// Largest request head (start line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Connections served at once; a connection past it is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Of those, the most one remote address may hold.
    pub max_per_peer: usize,
    /// Connections kept for peers on this host's own address, beyond `max_connections`.
    pub reserved_for_local: usize,
    /// The longest a connection may stay open, requests and idle time included.
    pub connection_deadline: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_connections: 1024,
            max_per_peer: 1024,
            reserved_for_local: 0,
            connection_deadline: None,
        }
    }
}

impl Limits {
    /// The health listener's: it is reachable from the pod network (`0.0.0.0` by default) and
    /// serves probes and one scraper, so a little is plenty, and a flood must stay cheap.
    pub fn health() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(2),
            max_header_bytes: 8 * 1024,
            max_connections: 32,
            max_per_peer: 4,
            reserved_for_local: 8,
            connection_deadline: Some(Duration::from_secs(30)),
        }
    }
}

/// Serve `listener` with `handler` until `cancel`: then stop accepting, let in-flight requests
/// finish and close idle kept-alive connections. `name` is for the log.
pub async fn run<H>(name: &'static str, listener: TcpListener, limits: Limits, handler: H, cancel: CancellationToken)
where
    H: Fn(&Request<Incoming>) -> Response<Body> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(limits.reserved_for_local));
    let per_peer: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(listener = name, error = %e, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let local = stream.local_addr().map(|a| a.ip() == peer.ip()).unwrap_or(false);
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(p) if local => p,
                _ => {
                    debug!(listener = name, %peer, max = limits.max_connections, "connection limit reached; closing the new connection");
                    continue;
                }
            },
        };
        let Some(slot) = PeerSlot::take(&per_peer, peer.ip(), if local { usize::MAX } else { limits.max_per_peer })
        else {
            debug!(listener = name, %peer, max = limits.max_per_peer, "connection limit per address reached; closing the new connection");
            continue;
        };
        let handler = handler.clone();
        let service = service_fn(move |req: Request<Incoming>| std::future::ready(Ok::<_, Infallible>(handler(&req))));
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let cancel = cancel.clone();
        let deadline = limits.connection_deadline;
        tokio::spawn(async move {
            let _permit = (permit, slot);
            tokio::pin!(conn);
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = expired => {
                    debug!(listener = name, %peer, "connection deadline reached; closing");
                    Ok(())
                }
            };
            if let Err(e) = result {
                debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    debug!(listener = name, "stopped accepting");
}

/// One connection counted against its remote address; released on drop.
struct PeerSlot {
    counts: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(counts: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot { counts: counts.clone(), ip })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const DEADLINE: Duration = Duration::from_secs(5);

    async fn start(limits: Limits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let handler = |_: &Request<Incoming>| Response::new(Body::from("hello"));
        tokio::spawn(run("test", listener, limits, handler, cancel.clone()));
        (addr, cancel)
    }

    /// Send one request on `stream` and read the response head (the body is tiny).
    async fn exchange(stream: &mut TcpStream) -> String {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await.unwrap().unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Read until the peer closes; true when it closed (EOF or reset) within the deadline.
    async fn closed_by_peer(stream: &mut TcpStream) -> bool {
        let mut sink = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut sink)).await.is_ok()
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests_on_one_connection() {
        let (addr, _cancel) = start(Limits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            let head = exchange(&mut s).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(head.ends_with("hello"), "{head}");
        }
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_disconnected() {
        let limits = Limits { header_read_timeout: Duration::from_millis(200), ..Limits::default() };
        let (addr, _cancel) = start(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
        assert!(closed_by_peer(&mut s).await, "slow client kept its connection");
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
        let limits = Limits { header_read_timeout: Duration::from_millis(200), ..Limits::default() };
        let (addr, _cancel) = start(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(exchange(&mut s).await.starts_with("HTTP/1.1 200"));
        assert!(closed_by_peer(&mut s).await, "idle connection kept open");
    }

    #[tokio::test]
    async fn oversized_headers_get_431() {
        let (addr, _cancel) = start(Limits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let big = "a".repeat(32 * 1024);
        let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
        // The server may answer and close before it has read everything: ignore write errors.
        let _ = s.write_all(req.as_bytes()).await;
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await.unwrap().unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_a_freed_slot_is_reused() {
        let limits = Limits { max_connections: 2, ..Limits::default() };
        let (addr, _cancel) = start(limits).await;
        // Two kept-alive connections hold both slots (a served request proves each was accepted).
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        assert!(exchange(&mut a).await.starts_with("HTTP/1.1 200"));
        assert!(exchange(&mut b).await.starts_with("HTTP/1.1 200"));

        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(closed_by_peer(&mut third).await, "a third connection was served");

        drop(a);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
            let mut buf = vec![0u8; 256];
            if let Ok(Ok(n)) = tokio::time::timeout(DEADLINE, c.read(&mut buf)).await {
                if buf[..n].starts_with(b"HTTP/1.1 200") {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "the freed slot was never reused");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn cancel_stops_accepting_and_closes_idle_connections() {
        let (addr, cancel) = start(Limits::default()).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(exchange(&mut idle).await.starts_with("HTTP/1.1 200"));
        cancel.cancel();
        assert!(closed_by_peer(&mut idle).await, "idle connection kept open after cancel");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still accepting after cancel");
            tokio::task::yield_now().await;
        }
    }
}
