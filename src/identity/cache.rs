use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Credential, IdentityError};
use crate::metrics::Metrics;
use crate::secret::SecretString;

/// Tokens per scope in front of a `Credential`, renewed at about 70% of their lifetime.
pub struct TokenCache {
    credential: Arc<dyn Credential>,
    metrics: Arc<Metrics>,
}

impl TokenCache {
    pub fn new(credential: Arc<dyn Credential>, metrics: Arc<Metrics>) -> Self {
        TokenCache { credential, metrics }
    }

    pub fn kind(&self) -> &'static str {
        self.credential.kind()
    }

    /// A valid token for `scope`, from the cache or freshly requested.
    pub async fn token_for(&self, scope: &str, cancel: &CancellationToken) -> Result<SecretString, IdentityError> {
        let _ = (scope, cancel, &self.metrics);
        todo!("identity helper")
    }

    /// Forget the cached token for `scope` (the service answered 401 to it).
    pub fn invalidate(&self, scope: &str) {
        let _ = scope;
        todo!("identity helper")
    }
}
