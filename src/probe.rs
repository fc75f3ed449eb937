//! `probe ready|live`: an exec probe for images with no shell and no curl. One HTTP/1.0 GET of
//! `/readyz` or `/healthz` on the health listener over a plain TCP connection (loopback, no
//! TLS), within a short timeout; success is a 200.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::ProbeKind;
use crate::config::{self, ConfigSource};

/// Where to probe when neither `--addr` nor a loadable config says.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8201);
/// The whole exchange, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Enough for a status line, headers and a one-line reason; the rest is not read.
const MAX_RESPONSE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer from {addr} within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("failed to connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("failed to talk to {addr}: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("{addr} did not answer with HTTP")]
    NotHttp { addr: SocketAddr },
    #[error("{addr}{path} answered {code}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Status { addr: SocketAddr, path: &'static str, code: u16, reason: Option<String> },
}

pub fn path_of(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Ready => "/readyz",
        ProbeKind::Live => "/healthz",
    }
}

/// `--addr`: `IP:PORT`, `[IPv6]:PORT`, or a bare port on 127.0.0.1.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<u16>()
        .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        .map_err(|_| format!("--addr {s:?} is not IP:PORT (e.g. 127.0.0.1:8201) or a port"))
}

/// The address that reaches a listener bound to `listen`: an unspecified address (`0.0.0.0`,
/// `[::]`) is probed on loopback. Port 0 cannot be known from outside.
pub fn addr_for_listen(listen: SocketAddr) -> Result<SocketAddr, String> {
    if listen.port() == 0 {
        return Err(format!("health.listen is {listen}: a port chosen at start; pass --addr"));
    }
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, listen.port()))
}

/// Why no address to probe could be decided.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `--addr` is not an address: a usage error.
    #[error("{0}")]
    BadAddr(String),
    #[error("health.listen is null in {0}: no health listener to probe; pass --addr")]
    NoListener(String),
    #[error("{0}")]
    UnknownPort(String),
}

/// The address to probe: `--addr`, else 127.0.0.1 and the port of `health.listen` when the
/// config (`$SIDECAR_CONFIG` or the default path, with `SIDECAR_*` overrides) loads, else
/// 127.0.0.1:8201.
pub fn target(addr: Option<&str>, env: &[(String, String)]) -> Result<SocketAddr, TargetError> {
    if let Some(a) = addr {
        return parse_addr(a).map_err(TargetError::BadAddr);
    }
    let source = ConfigSource::resolve(None, env);
    match config::load(source.path(), env) {
        Ok(cfg) => match cfg.health.listen {
            Some(listen) => addr_for_listen(listen).map_err(TargetError::UnknownPort),
            None => Err(TargetError::NoListener(source.path().display().to_string())),
        },
        Err(_) => Ok(DEFAULT_ADDR),
    }
}

/// GET the endpoint for `kind` at `addr`; `Ok` on a 200.
pub async fn probe(addr: SocketAddr, kind: ProbeKind, timeout: Duration) -> Result<(), ProbeError> {
    let path = path_of(kind);
    let response = tokio::time::timeout(timeout, exchange(addr, path))
        .await
        .map_err(|_| ProbeError::Timeout { addr, after: timeout })??;
    let (code, reason) = parse_response(&response).ok_or(ProbeError::NotHttp { addr })?;
    if code == 200 {
        Ok(())
    } else {
        Err(ProbeError::Status { addr, path, code, reason })
    }
}

async fn exchange(addr: SocketAddr, path: &str) -> Result<Vec<u8>, ProbeError> {
    let mut stream = TcpStream::connect(addr).await.map_err(|source| ProbeError::Connect { addr, source })?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: azure-secrets-sidecar-probe/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let io = |source| ProbeError::Io { addr, source };
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    // HTTP/1.0: the server closes after the response. A reset after a response still counts.
    let mut response = Vec::new();
    match (&mut stream).take(MAX_RESPONSE as u64).read_to_end(&mut response).await {
        Err(e) if response.is_empty() => Err(io(e)),
        _ => Ok(response),
    }
}

/// The status code, and the first line of the body (trimmed, at most 200 characters).
fn parse_response(bytes: &[u8]) -> Option<(u16, Option<String>)> {
    let text = String::from_utf8_lossy(bytes);
    let mut status_line = text.lines().next()?.split_whitespace();
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = status_line.next()?.parse().ok()?;
    let reason = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| body.lines().next())
        .map(|l| l.trim().chars().filter(|c| !c.is_control()).take(200).collect::<String>())
        .filter(|l| !l.is_empty());
    Some((code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::published::Health;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    async fn health() -> (SocketAddr, Arc<Health>, tokio_util::sync::DropGuard) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Health::new(Arc::new(Metrics::default()));
        status.set_stale_after(Duration::from_secs(60));
        let cancel = CancellationToken::new();
        tokio::spawn(crate::health::serve(listener, status.clone(), cancel.clone()));
        (addr, status, cancel.drop_guard())
    }

    #[tokio::test]
    async fn ready_fails_with_the_reason_until_ready_then_succeeds() {
        let (addr, status, _guard) = health().await;
        let err = probe(addr, ProbeKind::Ready, TIMEOUT).await.unwrap_err().to_string();
        assert_eq!(err, format!("{addr}/readyz answered 503: not ready: not every required object is published yet"));
        status.ready.store(true, Ordering::SeqCst);
        probe(addr, ProbeKind::Ready, TIMEOUT).await.unwrap();
    }

    #[tokio::test]
    async fn live_follows_the_heartbeat() {
        let (addr, status, _guard) = health().await;
        probe(addr, ProbeKind::Live, TIMEOUT).await.unwrap();
        status.heartbeat.store(0, Ordering::Relaxed);
        let err = probe(addr, ProbeKind::Live, TIMEOUT).await.unwrap_err().to_string();
        assert!(err.contains("/healthz answered 503: stalled"), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = probe(addr, ProbeKind::Live, TIMEOUT).await.unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
        assert!(err.to_string().starts_with(&format!("failed to connect to {addr}")), "{err}");
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepted by the kernel's backlog, never read from.
        let err = probe(addr, ProbeKind::Ready, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
        drop(listener);
    }

    #[tokio::test]
    async fn a_non_http_answer_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 512];
            let _ = s.read(&mut request).await;
            let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n").await;
        });
        let err = probe(addr, ProbeKind::Ready, TIMEOUT).await.unwrap_err();
        assert!(matches!(err, ProbeError::NotHttp { .. }), "{err}");
    }

    #[test]
    fn addresses_parse_and_unspecified_listeners_are_probed_on_loopback() {
        assert_eq!(parse_addr("127.0.0.1:9000").unwrap(), "127.0.0.1:9000".parse().unwrap());
        assert_eq!(parse_addr("[::1]:9000").unwrap(), "[::1]:9000".parse().unwrap());
        assert_eq!(parse_addr("9000").unwrap(), "127.0.0.1:9000".parse().unwrap());
        assert!(parse_addr("localhost:x").unwrap_err().contains("IP:PORT"));
        assert_eq!(addr_for_listen("0.0.0.0:8201".parse().unwrap()).unwrap(), DEFAULT_ADDR);
        assert_eq!(addr_for_listen("[::]:8201".parse().unwrap()).unwrap(), "[::1]:8201".parse().unwrap());
        assert_eq!(addr_for_listen("10.1.2.3:8201".parse().unwrap()).unwrap(), "10.1.2.3:8201".parse().unwrap());
        assert!(addr_for_listen("0.0.0.0:0".parse().unwrap()).unwrap_err().contains("--addr"));
    }

    fn write_config(dir: &std::path::Path, extra: &str) -> String {
        let p = dir.join("config.yaml");
        let yaml = format!("sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n{extra}");
        std::fs::write(&p, yaml).unwrap();
        p.display().to_string()
    }

    #[test]
    fn the_target_comes_from_the_flag_then_the_config_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let env = |path: &str| vec![("SIDECAR_CONFIG".to_string(), path.to_string())];
        assert_eq!(target(Some("127.0.0.1:9"), &[]).unwrap(), "127.0.0.1:9".parse().unwrap());
        assert!(matches!(target(Some("nope"), &[]), Err(TargetError::BadAddr(_))));

        let cfg = write_config(dir.path(), "health:\n  listen: 0.0.0.0:9301\n");
        assert_eq!(target(None, &env(&cfg)).unwrap(), "127.0.0.1:9301".parse().unwrap());
        let mut overridden = env(&cfg);
        overridden.push(("SIDECAR_HEALTH__LISTEN".into(), "127.0.0.2:9302".into()));
        assert_eq!(target(None, &overridden).unwrap(), "127.0.0.2:9302".parse().unwrap());

        let cfg = write_config(dir.path(), "health:\n  listen: null\n");
        assert!(target(None, &env(&cfg)).unwrap_err().to_string().contains("pass --addr"));
        let cfg = write_config(dir.path(), "health:\n  listen: 127.0.0.1:0\n");
        assert!(matches!(target(None, &env(&cfg)), Err(TargetError::UnknownPort(_))));

        let missing = dir.path().join("missing.yaml").display().to_string();
        assert_eq!(target(None, &env(&missing)).unwrap(), DEFAULT_ADDR);
    }

    #[test]
    fn responses_give_the_code_and_a_short_reason() {
        assert_eq!(parse_response(b"HTTP/1.0 200 OK\r\n\r\nok\n"), Some((200, Some("ok".into()))));
        assert_eq!(parse_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"), Some((503, None)));
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(parse_response(b""), None);
    }
}
