//! The plain-HTTP listeners: what Azure serves without TLS on a local address (the IMDS token
//! endpoint and App Service / Container Apps' `IDENTITY_ENDPOINT`) plus the emulator's own
//! control API under `/_emulator/`; and the Azure Arc agent's endpoint on its own port (its
//! token path is IMDS's).

use std::sync::Arc;

use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use serde_json::json;

use super::server::{self, Handler, Resp};
use super::{app_service, arc, control, imds, Shared};

pub(crate) struct PlainHandler {
    pub shared: Arc<Shared>,
}

impl Handler for PlainHandler {
    async fn handle(&self, req: Request<Bytes>) -> Resp {
        let shared = self.shared.as_ref();
        let path = req.uri().path();
        if path == imds::TOKEN_PATH {
            imds::handle(shared, req).await
        } else if app_service::is_token_path(path) {
            app_service::handle(shared, req).await
        } else if path == control::PREFIX || path.starts_with(&format!("{}/", control::PREFIX)) {
            control::handle(shared, req).await
        } else {
            server::json(StatusCode::NOT_FOUND, &json!({"error": "not_found", "error_description": "Unknown path"}))
        }
    }
}

/// The Azure Arc agent's listener.
pub(crate) struct ArcHandler {
    pub shared: Arc<Shared>,
}

impl Handler for ArcHandler {
    async fn handle(&self, req: Request<Bytes>) -> Resp {
        arc::handle(self.shared.as_ref(), req).await
    }
}
