//! The two listeners (health and secrets) across reloads: each is bound once and kept while its
//! address stays the same (a reload hands it new state instead: the `/healthz` staleness bound
//! through `Health`, the token through `SharedToken`); only a listener whose address changed is
//! rebound. New addresses are bound before the old sockets are released; when that fails
//! because one of ours holds a wanted address (the two ports swapped, `0.0.0.0:p` after
//! `127.0.0.1:p`), every listener that changes is stopped and awaited, the new addresses bound
//! again, and the old listeners put back if that still fails. A reload that cannot bind leaves
//! every listener as it was.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::RunError;
use crate::config::{Config, ConfigError};
use crate::output::serve::{self as secrets_http, SharedToken};
use crate::published::{Health, Published};
use sidecar_core::secret::SecretString;

/// Where the listeners are bound (port 0 in the config becomes the port chosen at start).
#[derive(Debug, Default)]
pub struct Listening {
    pub health: Option<SocketAddr>,
    pub secrets: Option<SocketAddr>,
}

/// Starts a listener's accept loop on a bound socket.
type Spawn = Arc<dyn Fn(TcpListener, CancellationToken) -> JoinHandle<()> + Send + Sync>;

/// One running listener.
struct Running {
    key: &'static str,
    /// The configured address (`bound` differs for port 0).
    addr: SocketAddr,
    bound: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    spawn: Spawn,
}

impl Running {
    fn start(
        key: &'static str,
        addr: SocketAddr,
        socket: TcpListener,
        spawn: Spawn,
        parent: &CancellationToken,
    ) -> Self {
        let bound = socket.local_addr().unwrap_or(addr);
        let cancel = parent.child_token();
        let task = spawn(socket, cancel.clone());
        Running { key, addr, bound, cancel, task, spawn }
    }

    /// Stop accepting and wait until the accept loop has dropped its socket.
    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// The listeners of the running config.
pub struct Listeners {
    health: Option<Running>,
    secrets: Option<Running>,
    /// The token file the secrets listener's token came from, and the token it checks (one
    /// for the life of the process: a listener kept across a reload sees a new one).
    token_path: Option<PathBuf>,
    token: SharedToken,
    parent: CancellationToken,
}

impl Listeners {
    /// Bind the listeners of `cfg` (before the first poll: probes answer at once, and a port in
    /// use fails the start, exit 1), log the bound addresses, and serve until `cancel`.
    pub async fn start(
        cfg: &Config,
        published: &Arc<Published>,
        health: &Arc<Health>,
        cancel: &CancellationToken,
    ) -> Result<Listeners, RunError> {
        let mut listeners = Listeners {
            health: None,
            secrets: None,
            token_path: None,
            token: Arc::new(RwLock::new(SecretString::new(String::new()))),
            parent: cancel.clone(),
        };
        listeners.apply(cfg, published, health).await?;
        Ok(listeners)
    }

    pub fn listening(&self) -> Listening {
        Listening { health: self.health.as_ref().map(|r| r.bound), secrets: self.secrets.as_ref().map(|r| r.bound) }
    }

    /// Make the listeners those of `cfg`: rebind what changed address, keep the rest. On an
    /// error every listener is as it was.
    pub async fn apply(
        &mut self,
        cfg: &Config,
        published: &Arc<Published>,
        health: &Arc<Health>,
    ) -> Result<(), RunError> {
        // The token first: it is the one part that reads a file.
        let token_path = match (cfg.serve.listen, secrets_http::token_path(&cfg.serve, &cfg.output)) {
            (None, _) => None,
            (Some(_), None) => {
                let reason = "required when output.dir is null".into();
                return Err(ConfigError { key: "serve.token_file".into(), reason }.into());
            }
            (Some(_), Some(path)) => Some(path),
        };
        let new_token = match &token_path {
            Some(path) if self.token_path.as_ref() != Some(path) => {
                let at = path.clone();
                // In the output volume other containers can write: only a file of our own uid.
                let shared = cfg.output.dir.as_deref().is_some_and(|d| path.parent() == Some(d));
                let loaded = tokio::task::spawn_blocking(move || secrets_http::load_or_create_token(&at, shared))
                    .await
                    .map_err(|e| RunError::Failed(format!("failed to prepare the serve token: {e}")))?
                    .map_err(|e| RunError::Failed(e.to_string()))?;
                Some(loaded)
            }
            _ => None,
        };

        let health_spawn: Spawn = {
            let health = health.clone();
            Arc::new(move |socket, cancel| tokio::spawn(crate::health::serve(socket, health.clone(), cancel)))
        };
        let secrets_spawn: Spawn = {
            let (published, token) = (published.clone(), self.token.clone());
            Arc::new(move |socket, cancel| {
                tokio::spawn(secrets_http::serve(socket, published.clone(), token.clone(), cancel))
            })
        };
        let wanted =
            [(Slot::Health, cfg.health.listen, health_spawn), (Slot::Secrets, cfg.serve.listen, secrets_spawn)];
        // The listeners whose address changes, and those to stop.
        let mut changed = Vec::new();
        let mut stopped = Vec::new();
        for (slot, want, spawn) in wanted {
            let running = self.slot(slot).as_ref().map(|r| r.addr);
            match want {
                Some(addr) if running != Some(addr) => changed.push((slot, addr, spawn)),
                None if running.is_some() => stopped.push(slot),
                _ => {}
            }
        }
        // Bind the new addresses beside the running listeners. When that fails, a new address
        // may be held by one of ours (the two ports swapped, `0.0.0.0:p` after `127.0.0.1:p`):
        // release every listener that changes and bind again; if that fails too, put them back.
        let bound = match bind_all(&changed).await {
            Ok(bound) => bound,
            Err(first) => {
                let mut released = Vec::new();
                for slot in changed.iter().map(|(slot, _, _)| *slot).chain(stopped.iter().copied()) {
                    if let Some(old) = self.slot(slot).take() {
                        released.push((slot, Released { key: old.key, addr: old.addr, spawn: old.spawn.clone() }));
                        old.stop().await;
                    }
                }
                if released.is_empty() {
                    return Err(first);
                }
                match bind_all(&changed).await {
                    Ok(bound) => bound,
                    Err(_) => {
                        for (slot, old) in released {
                            self.restore(slot, old).await;
                        }
                        return Err(first);
                    }
                }
            }
        };

        // Commit: nothing below fails. The token is in place before a secrets listener starts.
        if let (Some(path), Some((token, origin))) = (&token_path, new_token) {
            *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
            info!(token_file = %path.display(), token = ?origin, "serve token ready");
        }
        self.token_path = token_path;
        for slot in stopped {
            if let Some(old) = self.slot(slot).take() {
                old.stop().await;
            }
        }
        for (slot, addr, socket, spawn) in bound {
            self.commit(slot, addr, socket, spawn).await;
        }
        Ok(())
    }

    fn slot(&mut self, slot: Slot) -> &mut Option<Running> {
        match slot {
            Slot::Health => &mut self.health,
            Slot::Secrets => &mut self.secrets,
        }
    }

    /// Start a stopped listener again on its old address.
    async fn restore(&mut self, slot: Slot, old: Released) {
        let parent = self.parent.clone();
        match bind(old.key, old.addr).await {
            Ok(socket) => *self.slot(slot) = Some(Running::start(old.key, old.addr, socket, old.spawn, &parent)),
            Err(e) => tracing::error!(error = %e, "failed to restore the previous listener"),
        }
    }

    /// Start the listener of `slot` on `socket`, stopping the one it replaces.
    async fn commit(&mut self, slot: Slot, addr: SocketAddr, socket: TcpListener, spawn: Spawn) {
        let parent = self.parent.clone();
        let running = self.slot(slot);
        if let Some(old) = running.take() {
            old.stop().await;
        }
        let new = Running::start(slot.key(), addr, socket, spawn, &parent);
        match slot {
            Slot::Health => info!(addr = %new.bound, "health listener: /healthz /readyz /metrics"),
            Slot::Secrets => {
                info!(addr = %new.bound, "secrets listener: GET /v1/secrets/{{path}} with X-Sidecar-Token")
            }
        }
        *running = Some(new);
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Health,
    Secrets,
}

impl Slot {
    fn key(self) -> &'static str {
        match self {
            Slot::Health => "health.listen",
            Slot::Secrets => "serve.listen",
        }
    }
}

/// Bind every address of `changed`; on an error nothing stays bound.
async fn bind_all(
    changed: &[(Slot, SocketAddr, Spawn)],
) -> Result<Vec<(Slot, SocketAddr, TcpListener, Spawn)>, RunError> {
    let mut bound = Vec::new();
    for (slot, addr, spawn) in changed {
        bound.push((*slot, *addr, bind(slot.key(), *addr).await?, spawn.clone()));
    }
    Ok(bound)
}

/// A listener stopped to free an address, to put back if the reload fails after all.
struct Released {
    key: &'static str,
    addr: SocketAddr,
    spawn: Spawn,
}

async fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr).await.map_err(|e| RunError::Failed(format!("failed to listen on {addr} ({key}): {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::metrics::Metrics;
    use std::time::Duration;

    fn config(dir: &std::path::Path, listeners: &str) -> Config {
        let path = dir.join("config.yaml");
        let yaml = format!(
            "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\noutput:\n  dir: \"{}\"\n{listeners}",
            dir.join("out").display()
        );
        std::fs::write(&path, yaml).unwrap();
        std::fs::create_dir_all(dir.join("out")).unwrap();
        config::load(&path, &[]).unwrap()
    }

    #[tokio::test]
    async fn listeners_bind_port_0_report_their_addresses_and_stop_on_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "serve:\n  listen: 127.0.0.1:0\nhealth:\n  listen: 127.0.0.1:0\n");
        let (published, health) = (Published::new(), Health::new(Arc::new(Metrics::default())));
        let cancel = CancellationToken::new();
        let listening = Listeners::start(&cfg, &published, &health, &cancel).await.unwrap().listening();
        let (health, secrets) = (listening.health.unwrap(), listening.secrets.unwrap());
        assert_ne!(health.port(), 0);
        assert_ne!(secrets.port(), 0);
        let live = reqwest::get(format!("http://{health}/healthz")).await.unwrap();
        assert_eq!(live.status(), 200);
        let token = std::fs::read_to_string(dir.path().join("out/.sidecar-token")).unwrap();
        let before_publish = reqwest::Client::new()
            .get(format!("http://{secrets}/v1/secrets"))
            .header(secrets_http::TOKEN_HEADER, token)
            .send()
            .await
            .unwrap();
        assert_eq!(before_publish.status(), 503);

        cancel.cancel();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(health).await.is_ok()
            || tokio::net::TcpStream::connect(secrets).await.is_ok()
        {
            assert!(std::time::Instant::now() < deadline, "still listening after cancel");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_runtime_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let cfg = config(dir.path(), &format!("serve:\n  listen: null\nhealth:\n  listen: {addr}\n"));
        let (published, health) = (Published::new(), Health::new(Arc::new(Metrics::default())));
        let err = Listeners::start(&cfg, &published, &health, &CancellationToken::new()).await.err().unwrap();
        assert!(matches!(err, RunError::Failed(_)), "{err}");
        assert!(err.to_string().starts_with(&format!("failed to listen on {addr} (health.listen)")), "{err}");
    }

    #[tokio::test]
    async fn no_listener_is_started_when_both_are_null() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "serve:\n  listen: null\nhealth:\n  listen: null\n");
        let (published, health) = (Published::new(), Health::new(Arc::new(Metrics::default())));
        let listening =
            Listeners::start(&cfg, &published, &health, &CancellationToken::new()).await.unwrap().listening();
        assert!(listening.health.is_none() && listening.secrets.is_none());
        assert!(!dir.path().join("out/.sidecar-token").exists(), "no token without a secrets listener");
    }

    #[tokio::test]
    async fn an_overlapping_address_is_rebound_and_a_failed_reload_puts_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (published, health) = (Published::new(), Health::new(Arc::new(Metrics::default())));
        health.set_stale_after(Duration::from_secs(60));
        let cancel = CancellationToken::new();
        let first = config(dir.path(), &format!("serve:\n  listen: null\nhealth:\n  listen: 127.0.0.1:{port}\n"));
        let mut listeners = Listeners::start(&first, &published, &health, &cancel).await.unwrap();
        let healthz = format!("http://127.0.0.1:{port}/healthz");
        assert_eq!(reqwest::get(&healthz).await.unwrap().status(), 200);

        // 0.0.0.0 on the same port overlaps 127.0.0.1: the old socket goes first.
        let wide = config(dir.path(), &format!("serve:\n  listen: null\nhealth:\n  listen: 0.0.0.0:{port}\n"));
        listeners.apply(&wide, &published, &health).await.unwrap();
        assert_eq!(reqwest::get(&healthz).await.unwrap().status(), 200);

        // Back to 127.0.0.1 (overlap again), with a secrets port that is taken: the reload
        // fails and the health listener that was stopped for it is back.
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = taken.local_addr().unwrap();
        let bad = config(dir.path(), &format!("serve:\n  listen: {taken}\nhealth:\n  listen: 127.0.0.1:{port}\n"));
        assert!(listeners.apply(&bad, &published, &health).await.is_err());
        assert_eq!(reqwest::get(&healthz).await.unwrap().status(), 200);
        assert_eq!(listeners.listening().health.map(|a| a.ip().is_unspecified()), Some(true), "the old one, 0.0.0.0");
        cancel.cancel();
    }
}
