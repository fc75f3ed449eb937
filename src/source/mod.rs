//! Sources: poll Azure and return objects with versions. A source knows Azure's wire format and
//! nothing about files or HTTP; what it returns goes into a `Snapshot`.
//!
//! A poll either fails as a whole (`SourceError`: token, network, throttling past retries), in
//! which case everything it published before stays, or returns the objects it got plus the
//! ones it could not get (`Failure`), whose last published values stay.

pub mod appconfig;
pub mod json_value;
pub mod keyvault;
pub mod render;

use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::azure::AzureError;
use crate::identity::{BoxFuture, IdentityError};
use sidecar_core::relpath::RelPath;
use sidecar_core::secret::SecretValue;

pub trait Source: Send {
    /// Stable id for logs and metrics (`keyvault:myvault.vault.azure.net`).
    fn id(&self) -> &str;
    fn poll<'a>(&'a mut self, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<Polled, SourceError>>;
}

/// What one poll got.
#[derive(Debug, Default)]
pub struct Polled {
    pub objects: Vec<Object>,
    pub failures: Vec<Failure>,
}

/// One object to publish at `path`.
#[derive(Debug, Clone)]
pub struct Object {
    pub path: RelPath,
    pub value: SecretValue,
    /// The object's version (Key Vault secret version, App Configuration etag digest).
    pub version: String,
    pub updated: Option<SystemTime>,
    pub required: bool,
}

/// An object the source is configured or known to provide but could not get this time.
#[derive(Debug, Clone)]
pub struct Failure {
    pub path: RelPath,
    /// The Azure name (secret name, key), for the log.
    pub name: String,
    pub required: bool,
    /// Why, without any value: `SecretDisabled`, `SecretNotFound (404)`, `expired`, ...
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Azure(#[from] AzureError),
    #[error("{0}")]
    Invalid(String),
    #[error("cancelled by shutdown")]
    Cancelled,
}
