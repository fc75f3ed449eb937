use std::sync::Arc;

use super::{AzureEnv, Credential};
use crate::azure::AzureClient;
use crate::config::{Cloud, ConfigError, IdentityConfig};

/// Which mechanism, with its parameters, after `auto` and the env fallbacks are applied.
/// `Debug` never shows a secret.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedIdentity {
    Placeholder,
}

/// Decide the identity from config and environment, with no network. Errors name the key.
pub fn resolve(cfg: &IdentityConfig, cloud: Cloud, env: &AzureEnv) -> Result<ResolvedIdentity, ConfigError> {
    let _ = (cfg, cloud, env);
    todo!("identity helper")
}

/// Make the credential for a resolved identity.
pub fn build(resolved: &ResolvedIdentity, client: AzureClient) -> Arc<dyn Credential> {
    let _ = (resolved, client);
    todo!("identity helper")
}
