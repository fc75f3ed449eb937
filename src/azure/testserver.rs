//! A tiny scripted HTTP/1.1 server on 127.0.0.1:0 for the tests of `azure` and `identity`:
//! it records every request (method, target, headers, body) and answers from a script.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Decoded query parameters.
    pub fn query(&self) -> Vec<(String, String)> {
        let q = self.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query().into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Decoded `application/x-www-form-urlencoded` body fields.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }

    pub fn form_field(&self, name: &str) -> Option<String> {
        self.form().into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, body: &str) -> Reply {
        Reply { status, headers: vec![("content-type".into(), "application/json".into())], body: body.into() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Responder = dyn Fn(&Recorded) -> Reply + Send + Sync;

pub struct TestServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Answers the replies in order, repeating the last one.
    pub async fn scripted(replies: Vec<Reply>) -> TestServer {
        assert!(!replies.is_empty());
        let seen = Arc::new(Mutex::new(0usize));
        TestServer::start(move |_| {
            let mut n = seen.lock().unwrap();
            let reply = replies[(*n).min(replies.len() - 1)].clone();
            *n += 1;
            reply
        })
        .await
    }

    pub async fn start(responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> TestServer {
        TestServer::start_inner(None, responder).await
    }

    /// Like `start`, behind TLS.
    pub async fn start_tls(
        tls: tokio_rustls::TlsAcceptor,
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        TestServer::start_inner(Some(tls), responder).await
    }

    async fn start_inner(
        tls: Option<tokio_rustls::TlsAcceptor>,
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let responder: Arc<Responder> = Arc::new(responder);
        let (reqs, notify) = (requests.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (reqs, notify, responder, tls) = (reqs.clone(), notify.clone(), responder.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let (reqs, notify, responder) = (reqs.clone(), notify.clone(), responder.clone());
                        async move {
                            let recorded = record(req).await;
                            let reply = responder(&recorded);
                            reqs.lock().unwrap().push(recorded);
                            notify.notify_waiters();
                            Ok::<_, Infallible>(respond(reply))
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        TestServer { addr, requests, arrived, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Wait (up to 10 s) until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            if self.count() >= n {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => panic!("only {} of {n} requests arrived", self.count()),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(req: hyper::Request<Incoming>) -> Recorded {
    let method = req.method().to_string();
    let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Recorded { method, target, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

fn respond(reply: Reply) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    resp.body(Full::new(Bytes::from(reply.body))).unwrap()
}

/// An `AzureClient` for tests: plain http to loopback, millisecond backoff.
pub fn test_client(max_retries: u32) -> crate::azure::AzureClient {
    let settings =
        crate::azure::HttpSettings { ca_file: None, ssl_cert_file: None, request_timeout: Duration::from_secs(10) };
    let policy = crate::azure::RetryPolicy {
        max_retries,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    crate::azure::AzureClient::new(&settings, policy, Arc::new(crate::metrics::Metrics::default())).unwrap()
}
