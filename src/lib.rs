//! azure-secrets-sidecar: Azure Key Vault secrets and App Configuration settings, fetched with
//! the pod's identity and handed to the app as atomically published files or loopback HTTP.
//!
//! The data path runs one way: `config` -> `identity` -> `source` -> `snapshot` -> `published`
//! -> `output`, with `runtime` (schedule, reload, signals, shutdown) around it and `app` wiring
//! it for each command.

pub mod app;
pub mod azure;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod health;
pub mod identity;
pub mod inject;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod output;
pub mod probe;
pub mod published;
pub mod runtime;
pub mod snapshot;
pub mod source;
