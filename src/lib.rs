//! azure-secrets-sidecar: Azure Key Vault secrets and App Configuration settings, fetched with
//! the pod's identity and handed to the app as atomically published files or loopback HTTP.
//!
//! The data path runs one way: `config` -> `identity` -> `source` -> `snapshot` -> `output`,
//! with `runtime` (schedule, signals, shutdown) around it and `app` wiring it for each command.

pub mod app;
pub mod azure;
pub mod cli;
pub mod config;
#[cfg(feature = "emulator")]
pub mod demo;
#[cfg(feature = "emulator")]
pub mod emulator;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod health;
pub mod identity;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod pki;
pub mod probe;
pub mod relpath;
pub mod runtime;
pub mod secret;
pub mod snapshot;
pub mod utc;
pub mod source;
