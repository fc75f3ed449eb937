//! An HTTP CONNECT proxy on loopback that reaches the vaults by their DNS names
//! (`main.vault.<domain>:443` -> the vault's listener), so clients (the sidecar through
//! `HTTPS_PROXY`, Microsoft's SDKs through their `proxies` option) talk to Azure-shaped host
//! names without any name being resolved. A CONNECT to a loopback address is passed through
//! (the authority, stores); anything else is refused with 403: nothing leaves the machine.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest request head we read.
const MAX_HEAD: usize = 8 * 1024;

pub(crate) fn serve(
    listener: TcpListener,
    routes: BTreeMap<String, SocketAddr>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let routes = std::sync::Arc::new(routes);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => if let Ok((stream, _)) = accepted {
                    let routes = routes.clone();
                    let cancel = cancel.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = tunnel(stream, &routes) => {}
                        }
                    });
                },
            }
        }
    })
}

async fn tunnel(mut client: TcpStream, routes: &BTreeMap<String, SocketAddr>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    if method != "CONNECT" {
        return client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n").await;
    }
    let Some(upstream) = route(target, routes) else {
        tracing::warn!(target, "emulator proxy: refusing a CONNECT to a host it does not serve");
        return client.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
    };
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(_) => return client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await,
    };
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
    // Bytes after the head (a client that did not wait for the 200) go on to the server.
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").map_or(head.len(), |p| p + 4);
    server.write_all(&head[end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await.map(|_| ())
}

/// `main.vault.example.localhost:443` -> the vault's listener; `127.0.0.1:8443` -> itself.
fn route(target: &str, routes: &BTreeMap<String, SocketAddr>) -> Option<SocketAddr> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let wildcard = host.split_once('.').map(|(_, parent)| format!("*.{parent}"));
    if let Some(addr) = routes.get(&host).or_else(|| wildcard.and_then(|w| routes.get(&w))) {
        return (port == 443).then_some(*addr);
    }
    let ip: IpAddr = if host == "localhost" { IpAddr::from([127, 0, 0, 1]) } else { host.parse().ok()? };
    ip.is_loopback().then(|| SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_it_serves_and_loopback_only() {
        let vault: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let login: SocketAddr = "127.0.0.1:9002".parse().unwrap();
        let routes = BTreeMap::from([
            ("main.vault.sov.localhost".to_string(), vault),
            ("*.login.sov.localhost".to_string(), login),
        ]);
        assert_eq!(route("westus2.login.sov.localhost:443", &routes), Some(login));
        assert_eq!(route("a.westus2.login.sov.localhost:443", &routes), None, "one label only");
        assert_eq!(route("MAIN.vault.sov.localhost:443", &routes), Some(vault));
        assert_eq!(route("main.vault.sov.localhost:8443", &routes), None);
        assert_eq!(route("127.0.0.1:8443", &routes), Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(route("[::1]:8443", &routes), Some("[::1]:8443".parse().unwrap()));
        assert_eq!(route("localhost:1", &routes), Some("127.0.0.1:1".parse().unwrap()));
        for refused in ["other.vault.sov.localhost:443", "login.microsoftonline.com:443", "10.0.0.1:443", "x"] {
            assert_eq!(route(refused, &routes), None, "{refused}");
        }
    }
}
