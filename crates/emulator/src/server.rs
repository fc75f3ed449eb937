//! HTTP/1 listeners, plain or TLS, that collect each request's body and hand the request to a
//! handler, and stop (accepting first, then draining connections) when the emulator's
//! cancellation token fires. Also the small request/response helpers every endpoint uses.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Request bodies larger than this are refused (413): token forms and control JSON are small.
const MAX_BODY: usize = 1 << 20;
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish before aborting them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) type Resp = Response<Full<Bytes>>;

/// Answers one request whose body has been read.
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request<Bytes>) -> impl Future<Output = Resp> + Send;
}

/// Bind `ip` on a free port; `what` names the listener in the error.
pub(crate) async fn bind(ip: IpAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind((ip, 0))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("failed to bind the emulator's {what} listener on {ip}: {e}")))
}

/// Serve `listener` until `cancel` fires; the task ends once connections are drained.
pub(crate) fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(connection(stream, tls.clone(), handler.clone(), cancel.clone()));
                    }
                    Err(e) => tracing::warn!(error = %e, "emulator failed to accept a connection"),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
            connections.abort_all();
        }
    })
}

async fn connection<H: Handler>(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => http(TokioIo::new(stream), handler, cancel).await,
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => http(TokioIo::new(tls_stream), handler, cancel).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "emulator TLS handshake failed"),
            Err(_) => tracing::debug!("emulator TLS handshake timed out"),
        },
    }
}

async fn http<I, H>(io: I, handler: Arc<H>, cancel: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Handler,
{
    let cancel_for_body = cancel.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let cancel = cancel_for_body.clone();
        async move { Ok::<_, Infallible>(Stalling::wrap(dispatch(handler.as_ref(), req).await, &cancel)) }
    });
    let conn = http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "emulator connection ended with an error");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn dispatch<H: Handler>(handler: &H, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => handler.handle(Request::from_parts(parts, collected.to_bytes())).await,
        Err(_) => text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or unreadable"),
    }
}

/// Marks a response whose body stalls halfway for this long (a fault's `body_stall_ms`).
#[derive(Clone, Copy)]
pub(crate) struct BodyStall(pub Duration);

/// A response body sent in two halves with a pause between them (no pause without a
/// `BodyStall`); the pause ends early when the emulator shuts down.
pub(crate) struct Stalling {
    first: Option<Bytes>,
    rest: Option<Bytes>,
    pause: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    len: u64,
}

impl Stalling {
    fn wrap(resp: Resp, cancel: &CancellationToken) -> Response<Stalling> {
        let stall = resp.extensions().get::<BodyStall>().copied();
        let (parts, body) = resp.into_parts();
        // A Full body is one frame, ready at once.
        let bytes = body.into_inner().unwrap_or_default();
        let len = bytes.len() as u64;
        let body = match stall {
            None => Stalling { first: Some(bytes), rest: None, pause: None, len },
            Some(BodyStall(pause)) => {
                let cancel = cancel.clone();
                let half = bytes.len() / 2;
                let wait = async move {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = cancel.cancelled() => {}
                    }
                };
                Stalling {
                    first: Some(bytes.slice(..half)),
                    rest: Some(bytes.slice(half..)),
                    pause: Some(Box::pin(wait)),
                    len,
                }
            }
        };
        Response::from_parts(parts, body)
    }
}

impl Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some(pause) = this.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        Poll::Ready(this.rest.take().map(|rest| Ok(Frame::data(rest))))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

// ---- responses --------------------------------------------------------------------------------

/// A JSON response with Azure's usual `Content-Type`.
pub(crate) fn json(status: StatusCode, body: &Value) -> Resp {
    bytes_response(status, "application/json; charset=utf-8", Bytes::from(body.to_string()))
}

pub(crate) fn text(status: StatusCode, body: &str) -> Resp {
    bytes_response(status, "text/plain; charset=utf-8", Bytes::from(body.to_owned()))
}

pub(crate) fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

pub(crate) fn bytes_response(status: StatusCode, content_type: &str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    set_header(&mut resp, CONTENT_TYPE.as_str(), content_type);
    resp
}

/// Set a header, ignoring names or values that are not valid HTTP (fault rules come from JSON).
pub(crate) fn set_header(resp: &mut Resp, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        resp.headers_mut().insert(name, value);
    }
}

// ---- requests ---------------------------------------------------------------------------------

/// A request's query string, decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn of<B>(req: &Request<B>) -> Query {
        let pairs = req.uri().query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect());
        Query(pairs.unwrap_or_default())
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// A header's value, if present and text.
pub(crate) fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}
