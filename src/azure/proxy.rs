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
    use crate::azure::testserver::{Reply, TestServer};
    use std::collections::HashMap;

    fn client(vars: &[(&str, String)]) -> reqwest::Client {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let mut builder = reqwest::Client::builder().no_proxy();
        for proxy in from_vars(|n| vars.get(n).cloned()).unwrap() {
            builder = builder.proxy(proxy);
        }
        builder.build().unwrap()
    }

    /// The `Host` and path of every request `server` saw.
    fn seen(server: &TestServer) -> Vec<(String, String)> {
        server
            .requests()
            .iter()
            .map(|r| (r.header("host").unwrap_or_default().to_string(), r.path().to_string()))
            .collect()
    }

    #[tokio::test]
    async fn loopback_goes_direct_and_everything_else_through_the_proxy() {
        let proxy = TestServer::start(|_| Reply::new(204, "")).await;
        let target = TestServer::start(|_| Reply::new(204, "")).await;
        let (at, port) = (target.addr, target.addr.port());
        for name in ["HTTP_PROXY", "http_proxy", "ALL_PROXY"] {
            let http = client(&[(name, format!("http://{}", proxy.addr))]);
            // Loopback, named by address: straight to the target.
            http.get(format!("http://{at}/direct")).send().await.unwrap();
            // Any other host: to the proxy (which answers itself: nothing is resolved or leaves
            // the machine).
            http.get("http://vault.sidecar.invalid/proxied").send().await.unwrap();
        }
        assert_eq!(seen(&target), vec![(at.to_string(), "/direct".to_string()); 3]);
        assert_eq!(seen(&proxy), vec![("vault.sidecar.invalid".to_string(), "/proxied".to_string()); 3]);
        // Only addresses are loopback by rule: the name `localhost` follows NO_PROXY as any name
        // does (`/etc/hosts` resolves it, no DNS).
        let named = (format!("localhost:{port}"), "/named".to_string());
        client(&[("HTTP_PROXY", format!("http://{}", proxy.addr))])
            .get(format!("http://localhost:{port}/named"))
            .send()
            .await
            .unwrap();
        assert_eq!(seen(&proxy).last(), Some(&named));
        client(&[("HTTP_PROXY", format!("http://{}", proxy.addr)), ("no_proxy", "localhost".into())])
            .get(format!("http://localhost:{port}/named"))
            .send()
            .await
            .unwrap();
        assert_eq!(seen(&target).last(), Some(&named));
        assert_eq!(seen(&proxy).len(), 4, "the NO_PROXY name went direct");
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
