//! The Key Vault references of one App Configuration source: each distinct secret URI is read
//! once, concurrently (at most `sync.concurrency` reads at a time), and then re-checked the way
//! the Key Vault source checks its secrets: per referenced vault, its list pages every
//! `secret_refresh_interval`, and a GET only for a secret whose list item changed (or that was
//! read too soon after its `updated` to be sure). A pinned version (a URI with a version) never
//! changes: it is read once. An identity that may read but not list (a 403 on the list) gets
//! its referenced secrets read again at each re-check instead.
//!
//! A reference that fails later keeps its last value; the caller decides what a reference that
//! never resolved means.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::azure::{AzureClient, AzureError};
use crate::identity::TokenCache;
use crate::source::keyvault::{get_secret_by_url, list_secret_stamps, secret_name, ReadSecret, SecretStamp};
use crate::source::SourceError;
use sidecar_core::secret::SecretString;

/// The resolved references of one source, by secret URI.
pub(super) struct References {
    client: AzureClient,
    tokens: Arc<TokenCache>,
    scope: String,
    every: Duration,
    concurrency: usize,
    cached: BTreeMap<String, Cached>,
    /// Per vault (its origin): when its referenced secrets were last known current.
    checked: BTreeMap<String, Instant>,
}

/// One GET's outcome: the secret, or why it cannot be had (`Err` only on shutdown).
type Read = Result<Result<ReadSecret, String>, SourceError>;

struct Cached {
    url: Url,
    value: SecretString,
    stamp: SecretStamp,
}

impl References {
    /// `scope`: the Key Vault token scope; `every`: `secret_refresh_interval`.
    pub(super) fn new(
        client: AzureClient,
        tokens: Arc<TokenCache>,
        scope: String,
        every: Duration,
        concurrency: usize,
    ) -> References {
        References {
            client,
            tokens,
            scope,
            every,
            concurrency: concurrency.max(1),
            cached: BTreeMap::new(),
            checked: BTreeMap::new(),
        }
    }

    /// Brings the references `wanted` (by URI) up to date: reads the ones never read, and
    /// for every vault due for a re-check, those whose list item changed. Forgets the ones no
    /// longer wanted. Returns why each read that failed this time failed (by URI); `Err` only on
    /// shutdown.
    pub(super) async fn refresh(
        &mut self,
        source: &str,
        wanted: &BTreeMap<String, Url>,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, String>, SourceError> {
        self.cached.retain(|uri, _| wanted.contains_key(uri));
        let mut to_read: BTreeMap<String, Url> = wanted
            .iter()
            .filter(|(uri, _)| !self.cached.contains_key(*uri))
            .map(|(u, url)| (u.clone(), url.clone()))
            .collect();
        let now = Instant::now();
        let vaults: BTreeSet<String> = self
            .cached
            .values()
            .filter(|c| !is_pinned(&c.url))
            .map(|c| vault_of(&c.url))
            .filter(|v| self.checked.get(v).is_none_or(|at| now.duration_since(*at) >= self.every))
            .collect();
        for vault in vaults {
            let base = Url::parse(&vault).map_err(|e| SourceError::Invalid(format!("vault URL {vault}: {e}")))?;
            let latest = self.cached.iter().filter(|(_, c)| !is_pinned(&c.url) && vault_of(&c.url) == vault);
            match list_secret_stamps(&self.client, &self.tokens, &self.scope, &base, cancel).await {
                Ok(stamps) => {
                    for (uri, c) in latest {
                        let listed = secret_name(&c.url).and_then(|name| stamps.get(&name));
                        if !c.stamp.unchanged(listed) {
                            to_read.insert(uri.clone(), c.url.clone());
                        }
                    }
                    self.checked.insert(vault, now);
                }
                Err(SourceError::Cancelled) => return Err(SourceError::Cancelled),
                Err(SourceError::Azure(e @ AzureError::Status { status: 403, .. })) => {
                    tracing::warn!(
                        source,
                        vault,
                        "the referenced vault refused its secret list; re-reading its referenced secrets instead: {e}"
                    );
                    to_read.extend(latest.map(|(uri, c)| (uri.clone(), c.url.clone())));
                    self.checked.insert(vault, now);
                }
                // Throttled or down: the values stay, the vault is checked again at the next poll.
                Err(e) => tracing::warn!(
                    source,
                    vault,
                    "failed to list the referenced vault; its referenced secrets keep their values: {e}"
                ),
            }
        }
        let failures = self.read_all(to_read, cancel).await?;
        for url in wanted.values() {
            self.checked.entry(vault_of(url)).or_insert(now);
        }
        Ok(failures)
    }

    /// The last value read for `uri`, if it ever resolved.
    pub(super) fn value(&self, uri: &str) -> Option<&SecretString> {
        self.cached.get(uri).map(|c| &c.value)
    }

    /// GETs every secret in `urls`, at most `concurrency` at once; the failures by URI.
    async fn read_all(
        &mut self,
        urls: BTreeMap<String, Url>,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, String>, SourceError> {
        let mut queue = urls.into_iter();
        let mut running: JoinSet<(String, Url, Read)> = JoinSet::new();
        let mut failures = BTreeMap::new();
        loop {
            while running.len() < self.concurrency {
                let Some((uri, url)) = queue.next() else { break };
                let (client, tokens, scope, cancel) =
                    (self.client.clone(), self.tokens.clone(), self.scope.clone(), cancel.clone());
                running.spawn(async move {
                    let read = get_secret_by_url(&client, &tokens, &scope, &url, &cancel).await;
                    (uri, url, read)
                });
            }
            let Some(done) = running.join_next().await else { break };
            let (uri, url, read) = done.map_err(|e| SourceError::Invalid(format!("a Key Vault read failed: {e}")))?;
            match read? {
                Ok(read) => {
                    let value = SecretString::new(String::from_utf8_lossy(read.value.expose()).into_owned());
                    self.cached.insert(uri, Cached { url, value, stamp: read.stamp });
                }
                Err(why) => {
                    failures.insert(uri, why);
                }
            }
        }
        Ok(failures)
    }
}

/// A secret URL with a version segment (`/secrets/{name}/{version}`).
fn is_pinned(url: &Url) -> bool {
    url.path_segments().is_some_and(|s| s.filter(|s| !s.is_empty()).count() >= 3)
}

/// The vault a secret URL is in: its origin, as a base URL.
fn vault_of(url: &Url) -> String {
    format!("{}/", url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_in_the_url_pins_it_and_the_vault_is_the_origin() {
        let latest = Url::parse("https://v.vault.azure.net/secrets/db-password").unwrap();
        let pinned = Url::parse("https://v.vault.azure.net/secrets/db-password/0123abcd").unwrap();
        assert!(!is_pinned(&latest));
        assert!(!is_pinned(&Url::parse("https://v.vault.azure.net/secrets/db-password/").unwrap()));
        assert!(is_pinned(&pinned));
        assert_eq!(vault_of(&pinned), "https://v.vault.azure.net/");
        assert_eq!(vault_of(&Url::parse("https://127.0.0.1:8443/secrets/x").unwrap()), "https://127.0.0.1:8443/");
    }
}
