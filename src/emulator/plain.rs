//! The plain-HTTP listener: what Azure serves without TLS on a local address (the IMDS token
//! endpoint; App Service / Container Apps `IDENTITY_ENDPOINT` and Azure Arc's local endpoint go
//! here too when they are added) plus the emulator's own control API under `/_emulator/`.

use std::sync::Arc;

use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use serde_json::json;

use super::server::{self, Handler, Resp};
use super::{control, imds, Shared};

pub(crate) struct PlainHandler {
    pub shared: Arc<Shared>,
}

impl Handler for PlainHandler {
    async fn handle(&self, req: Request<Bytes>) -> Resp {
        let shared = self.shared.as_ref();
        let path = req.uri().path();
        if path == imds::TOKEN_PATH {
            imds::handle(shared, req).await
        } else if path == control::PREFIX || path.starts_with(&format!("{}/", control::PREFIX)) {
            control::handle(shared, req).await
        } else {
            server::json(StatusCode::NOT_FOUND, &json!({"error": "not_found", "error_description": "Unknown path"}))
        }
    }
}
