//! The egress proxy the environment names (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
//! `NO_PROXY`, upper or lower case, read as reqwest reads them), with loopback addresses always
//! reached directly, as Go's `net/http` reaches them: a proxy cannot reach this pod's own
//! loopback, so an endpoint on `127.0.0.0/8`, `::1` or `::ffff:127.0.0.0/104` (a local emulator,
//! `demo`) never goes through one. Unlike Go, the name `localhost` follows `NO_PROXY` as any
//! name does: a `NO_PROXY` entry for it would match every `*.localhost` name too.

use super::AzureError;

/// A proxy for one scheme (or all) from its URL.
type MakeProxy = fn(&str) -> reqwest::Result<reqwest::Proxy>;

/// Always direct, whatever `NO_PROXY` says.
const LOOPBACK: &str = "127.0.0.0/8,::1,::ffff:127.0.0.0/104";

/// The proxies for a client builder, from the variables `var` looks up; none when no proxy
/// variable is set. A proxy URL that does not parse is an error naming the variable (not its
/// value: it may carry a password).
pub(super) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Vec<reqwest::Proxy>, AzureError> {
    let first = |names: [&'static str; 2]| {
        names.into_iter().find_map(|n| var(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
    };
    let no_proxy = match first(["NO_PROXY", "no_proxy"]) {
        Some((_, list)) => format!("{list},{LOOPBACK}"),
        None => LOOPBACK.to_string(),
    };
    let schemes: [(MakeProxy, [&'static str; 2]); 3] = [
        (|u| reqwest::Proxy::https(u), ["HTTPS_PROXY", "https_proxy"]),
        (|u| reqwest::Proxy::http(u), ["HTTP_PROXY", "http_proxy"]),
        (|u| reqwest::Proxy::all(u), ["ALL_PROXY", "all_proxy"]),
    ];
    let mut proxies = Vec::new();
    for (make, names) in schemes {
        if let Some((name, url)) = first(names) {
            let proxy = make(url.trim())
                .map_err(|_| AzureError::Setup(format!("{name} is not a proxy URL this client can use")))?;
            proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&no_proxy)));
        }
    }
    Ok(proxies)
}

/// [`from_vars`] over the process environment.
pub(super) fn from_env() -> Result<Vec<reqwest::Proxy>, AzureError> {
    from_vars(|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A listener answering 204 to every request; the first line of each request it saw.
    async fn recorder() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let _ = tx.send(head.lines().next().unwrap_or_default().to_string());
                let _ = stream
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        (addr, rx)
    }

    fn client(vars: &[(&str, String)]) -> reqwest::Client {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let mut builder = reqwest::Client::builder().no_proxy();
        for proxy in from_vars(|n| vars.get(n).cloned()).unwrap() {
            builder = builder.proxy(proxy);
        }
        builder.build().unwrap()
    }

    #[tokio::test]
    async fn loopback_goes_direct_and_everything_else_through_the_proxy() {
        let (proxy, mut via_proxy) = recorder().await;
        let (target, mut direct) = recorder().await;
        for name in ["HTTP_PROXY", "http_proxy", "ALL_PROXY"] {
            let http = client(&[(name, format!("http://{proxy}"))]);
            // Loopback, named by address: straight to the target.
            http.get(format!("http://{target}/direct")).send().await.unwrap();
            assert_eq!(direct.recv().await.unwrap(), "GET /direct HTTP/1.1", "{name}");
            // Any other host: to the proxy (which answers itself: nothing is resolved or left
            // the machine).
            http.get("http://vault.sidecar.invalid/proxied").send().await.unwrap();
            assert_eq!(via_proxy.recv().await.unwrap(), "GET http://vault.sidecar.invalid/proxied HTTP/1.1", "{name}");
        }
        // Only addresses are loopback by rule: the name `localhost` follows NO_PROXY as any name
        // does (`/etc/hosts` resolves it, no DNS).
        let port = target.port();
        let http = client(&[("HTTP_PROXY", format!("http://{proxy}"))]);
        http.get(format!("http://localhost:{port}/named")).send().await.unwrap();
        assert_eq!(via_proxy.recv().await.unwrap(), format!("GET http://localhost:{port}/named HTTP/1.1"));
        let http = client(&[("HTTP_PROXY", format!("http://{proxy}")), ("no_proxy", "localhost".into())]);
        http.get(format!("http://localhost:{port}/named")).send().await.unwrap();
        assert_eq!(direct.recv().await.unwrap(), "GET /named HTTP/1.1");
        assert!(via_proxy.try_recv().is_err());
    }

    #[test]
    fn no_variable_no_proxy_and_a_bad_url_names_the_variable_not_the_value() {
        assert!(from_vars(|_| None).unwrap().is_empty());
        assert!(from_vars(|n| (n == "HTTPS_PROXY").then(|| "  ".to_string())).unwrap().is_empty());
        // Matched, not `unwrap_err()`: a `Proxy`'s Debug would print the password.
        let Err(err) = from_vars(|n| (n == "https_proxy").then(|| "http://user:s3cret@[bad".to_string())) else {
            panic!("a bad proxy URL is an error")
        };
        let text = err.to_string();
        assert!(text.contains("https_proxy") && !text.contains("s3cret"), "{text}");
    }
}
