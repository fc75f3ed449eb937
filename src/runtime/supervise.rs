//! The supervisor around one running config: builds the pipeline, binds the listeners, runs the
//! sync loop, and on a reload (SIGHUP or a config change, debounced) re-reads and validates the
//! config and swaps the loop (and the listeners whose settings changed); on SIGTERM or SIGINT it
//! stops polling and waits for an in-flight publish within `SHUTDOWN_GRACE`. `app` hands it what
//! to build a pipeline with (`Build`); it knows nothing of commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{sync, Control, RunError};
use crate::config::{self, Config, ConfigError};
use crate::identity;
use crate::metrics::Metrics;
use crate::output::serve as secrets_http;
use crate::output::webhook::{Delivery, Webhook};
use crate::published::{Health, Published};
use crate::snapshot::Snapshot;

/// How long SIGTERM waits for an in-flight publish before exiting anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long `run --once` keeps retrying a required object before giving up.
pub const ONCE_DEADLINE: Duration = Duration::from_secs(60);

/// What one config builds: the pipeline the sync loop runs, and the identity it runs as.
pub struct Built {
    pub pipeline: sync::Pipeline,
    pub identity: identity::ResolvedIdentity,
}

/// config -> identity -> sources -> outputs, for the first config and for every reload (given
/// the environment the process started with and the metrics the pipeline reports to).
pub type Build = fn(&Config, &[(String, String)], Arc<Metrics>) -> Result<Built, RunError>;

/// Build and run the pipeline until a shutdown arrives on `control` (or `--once` finishes).
/// `demo` calls this too, with its own control channel.
/// `reload_from`: the config file to watch and re-read on SIGHUP, with the sender the
/// watcher feeds into `control`; `None` runs the given config unchanged.
pub async fn serve(
    cfg: Config,
    build: Build,
    env: Vec<(String, String)>,
    once: bool,
    cancel: CancellationToken,
    reload_from: Option<(PathBuf, mpsc::UnboundedSender<Control>)>,
    mut control: mpsc::UnboundedReceiver<Control>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let built = build(&cfg, &env, metrics.clone())?;
    let published = Published::new();
    let health = Health::new(metrics);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        identity = %built.identity,
        sources = built.pipeline.sources.len(),
        output = %cfg.output.dir.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "none".into()),
        interval = %config::format_duration(cfg.sync.interval),
        "starting"
    );

    if once {
        let stop = cancel.clone();
        tokio::spawn(async move {
            while let Some(c) = control.recv().await {
                if let Control::Shutdown(sig) = c {
                    info!(signal = sig, "stopping");
                    stop.cancel();
                }
            }
        });
        return sync::once(built.pipeline, published, health, ONCE_DEADLINE, cancel)
            .await
            .map(|()| info!("--once: every required object is published"))
            .map_err(|missing| {
                RunError::Failed(format!("--once: could not publish required objects: {}", missing.join(", ")))
            });
    }

    let mut listeners = cancel.child_token();
    start_listeners(&cfg, &published, &health, &listeners).await?;
    let _watcher = match &reload_from {
        Some((path, tx)) => match crate::runtime::watch::watch_config(path, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch the config directory; reload on SIGHUP only");
                None
            }
        },
        None => None,
    };
    let mut current =
        Running::start(cfg, built.pipeline, (&published, &health), Arc::new(Snapshot::default()), false, &cancel);
    loop {
        let signal = tokio::select! {
            msg = control.recv() => match msg {
                Some(Control::Reload(reason)) => {
                    // Debounce: a ConfigMap update is a burst of events.
                    let mut stop = None;
                    while let Ok(Some(more)) = tokio::time::timeout(RELOAD_DEBOUNCE, control.recv()).await {
                        if let Control::Shutdown(sig) = more {
                            stop = Some(sig);
                            break;
                        }
                    }
                    if let Some(sig) = stop {
                        sig
                    } else {
                        if let Some((path, _)) = &reload_from {
                            current = reload(current, path, (build, &env), (&published, &health), &mut listeners, &cancel, reason).await;
                        }
                        continue;
                    }
                }
                Some(Control::Shutdown(sig)) => sig,
                None => "control channel closed",
            },
            res = &mut current.task => {
                return res.map(|_| ()).map_err(|e| RunError::Failed(format!("sync loop stopped unexpectedly: {e}")));
            }
        };
        info!(signal, "stopping: no new polls; waiting for an in-flight publish");
        cancel.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut current.task).await.is_err() {
            warn!("a publish did not finish within {SHUTDOWN_GRACE:?}; exiting anyway (the previous snapshot stays intact)");
        }
        info!("stopped; published files are kept");
        return Ok(());
    }
}

/// Reload events closer together than this are one reload.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// The running sync loop of one config.
struct Running {
    cfg: Config,
    task: tokio::task::JoinHandle<Arc<Snapshot>>,
    /// Cancels this loop (and its webhook) only: a reload stops it and starts the next.
    cancel: CancellationToken,
}

impl Running {
    fn start(
        cfg: Config,
        mut pipeline: sync::Pipeline,
        (published, health): (&Arc<Published>, &Arc<Health>),
        initial: Arc<Snapshot>,
        republish: bool,
        parent: &CancellationToken,
    ) -> Running {
        let cancel = parent.child_token();
        if let Some(url) = &cfg.on_change.webhook {
            // A webhook never blocks syncing: one that cannot be set up is logged and skipped.
            match Webhook::new(url.clone(), Delivery::default()) {
                Ok(webhook) => pipeline.notify = Some(webhook.spawn(cancel.clone())),
                Err(e) => error!(error = %e, "on_change.webhook disabled"),
            }
        }
        let task =
            tokio::spawn(sync::run(pipeline, published.clone(), health.clone(), initial, republish, cancel.clone()));
        Running { cfg, task, cancel }
    }
}

/// Re-read and validate the config; apply it if it is valid and different, else keep running
/// the old one. Sources, intervals and outputs change by swapping the sync loop (the published
/// snapshot carries over); listeners are rebound when their settings changed.
async fn reload(
    running: Running,
    path: &std::path::Path,
    (build, env): (Build, &[(String, String)]),
    (published, health): (&Arc<Published>, &Arc<Health>),
    listeners: &mut CancellationToken,
    cancel: &CancellationToken,
    reason: crate::runtime::ReloadReason,
) -> Running {
    let rejected = |e: &dyn std::fmt::Display| {
        health.metrics.config_reload(false);
        warn!(?reason, error = %e, "config reload rejected; the running config stays");
    };
    let new = match config::load(path, env) {
        Ok(c) => c,
        Err(e) => {
            rejected(&e);
            return running;
        }
    };
    if new == running.cfg {
        debug!(?reason, "config unchanged");
        return running;
    }
    let built = match build(&new, env, health.metrics.clone()) {
        Ok(b) => b,
        Err(e) => {
            rejected(&e);
            return running;
        }
    };
    let old = running.cfg.clone();
    let relisten = (&old.health, &old.serve, &old.output.dir) != (&new.health, &new.serve, &new.output.dir);
    if relisten {
        listeners.cancel();
        *listeners = cancel.child_token();
        if let Err(e) = start_listeners(&new, published, health, listeners).await {
            rejected(&e);
            *listeners = cancel.child_token();
            if let Err(e) = start_listeners(&old, published, health, listeners).await {
                error!(error = %e, "failed to restore the previous listeners");
            }
            return running;
        }
    }
    running.cancel.cancel();
    let last = match tokio::time::timeout(SHUTDOWN_GRACE, running.task).await {
        Ok(Ok(last)) => last,
        _ => published.current().unwrap_or_default(),
    };
    let ids = config::source_ids(&new.sources);
    let (kept, _) = last.retain_sources(&ids);
    info!(?reason, identity = %built.identity, sources = ids.len(), interval = %config::format_duration(new.sync.interval), "config reloaded");
    health.metrics.config_reload(true);
    Running::start(new, built.pipeline, (published, health), Arc::new(kept), true, cancel)
}

/// Where the listeners were bound (port 0 in the config becomes the port chosen at start).
#[derive(Debug, Default)]
pub struct Listening {
    pub health: Option<SocketAddr>,
    pub secrets: Option<SocketAddr>,
}

/// Bind the health and secrets listeners before the first poll (probes answer at once, and a
/// port in use fails the start, exit 1), log the bound addresses, and serve until `cancel`.
pub async fn start_listeners(
    cfg: &Config,
    published: &Arc<Published>,
    health: &Arc<Health>,
    cancel: &CancellationToken,
) -> Result<Listening, RunError> {
    let mut listening = Listening::default();
    if let Some(addr) = cfg.health.listen {
        let (listener, bound) = bind("health.listen", addr).await?;
        info!(addr = %bound, "health listener: /healthz /readyz /metrics");
        let stale_after = crate::health::stale_after(&cfg.sync);
        tokio::spawn(crate::health::serve(listener, health.clone(), stale_after, cancel.clone()));
        listening.health = Some(bound);
    }
    if let Some(addr) = cfg.serve.listen {
        let path = secrets_http::token_path(&cfg.serve, &cfg.output).ok_or_else(|| ConfigError {
            key: "serve.token_file".into(),
            reason: "required when output.dir is null".into(),
        })?;
        let at = path.clone();
        let (token, origin) = tokio::task::spawn_blocking(move || secrets_http::load_or_create_token(&at))
            .await
            .map_err(|e| RunError::Failed(format!("failed to prepare the serve token: {e}")))?
            .map_err(|e| RunError::Failed(e.to_string()))?;
        let (listener, bound) = bind("serve.listen", addr).await?;
        let token_file = path.display();
        info!(addr = %bound, %token_file, token = ?origin, "secrets listener: GET /v1/secrets/{{path}} with X-Sidecar-Token");
        tokio::spawn(secrets_http::serve(listener, published.clone(), token, cancel.clone()));
        listening.secrets = Some(bound);
    }
    Ok(listening)
}

async fn bind(key: &str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), RunError> {
    let failed = |e: std::io::Error| RunError::Failed(format!("failed to listen on {addr} ({key}): {e}"));
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let listening = start_listeners(&cfg, &published, &health, &cancel).await.unwrap();
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
        let err = start_listeners(&cfg, &published, &health, &CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, RunError::Failed(_)), "{err}");
        assert!(err.to_string().starts_with(&format!("failed to listen on {addr} (health.listen)")), "{err}");
    }

    #[tokio::test]
    async fn no_listener_is_started_when_both_are_null() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "serve:\n  listen: null\nhealth:\n  listen: null\n");
        let (published, health) = (Published::new(), Health::new(Arc::new(Metrics::default())));
        let listening = start_listeners(&cfg, &published, &health, &CancellationToken::new()).await.unwrap();
        assert!(listening.health.is_none() && listening.secrets.is_none());
        assert!(!dir.path().join("out/.sidecar-token").exists(), "no token without a secrets listener");
    }
}
