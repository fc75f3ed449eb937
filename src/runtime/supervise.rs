//! The supervisor around one running config: builds the pipeline, binds the listeners, runs the
//! sync loop, and on a reload (SIGHUP or a config change, debounced) re-reads and validates the
//! config and applies it; on SIGTERM or SIGINT it stops polling and waits for an in-flight
//! publish within `SHUTDOWN_GRACE` (a second signal exits at once). `app` hands it what to build
//! a pipeline with (`Build`); it knows nothing of commands.
//!
//! A reload keeps what did not change: the listeners whose address stayed (`listeners`), the
//! file writer of an unchanged `output.dir` (one writer per directory: its lock serialises the
//! old loop's last publish and the new loop's first), the webhook task of an unchanged URL (a
//! pending notification is not lost). The old loop is stopped and awaited before the new one
//! starts, and a cancelled loop never publishes into the shared state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::listeners::Listeners;
use super::{sync, Control, ReloadReason, RunError};
use crate::config::{self, Config};
use crate::identity;
use crate::metrics::Metrics;
use crate::output::files::FileOutput;
use crate::output::webhook::{Delivery, Notice, Webhook};
use crate::published::{Health, Published};
use crate::snapshot::Snapshot;

/// How long SIGTERM waits for an in-flight publish before exiting anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long `run --once` keeps retrying a required object before giving up.
pub const ONCE_DEADLINE: Duration = Duration::from_secs(60);
/// Reload events closer together than this are one reload.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// What one config builds: the pipeline the sync loop runs (its `files` and `notify` are the
/// supervisor's to fill: they outlive a reload), and the identity it runs as.
pub struct Built {
    pub pipeline: sync::Pipeline,
    pub identity: identity::ResolvedIdentity,
}

/// config -> identity -> sources, for the first config and for every reload (given the
/// environment the process started with and the metrics the pipeline reports to). It must not
/// touch the output directory: the supervisor owns the writer.
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
    let mut built = build(&cfg, &env, metrics.clone())?;
    let published = Published::new();
    let health = Health::new(metrics);
    health.set_stale_after(crate::health::stale_after(&cfg.sync));
    let files = match &cfg.output.dir {
        Some(dir) => Some(open_files(dir, cfg.output.file_mode).await?),
        None => None,
    };
    built.pipeline.files = files;
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

    let listeners = Listeners::start(&cfg, &published, &health, &cancel).await?;
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
    let mut sup = Supervisor {
        build,
        env,
        published,
        health,
        listeners,
        hook: Hook::default(),
        cancel: cancel.clone(),
        running: None,
    };
    sup.start(
        cfg,
        built.pipeline,
        sync::Stopped { snapshot: Arc::new(Snapshot::default()), unsent: Vec::new() },
        false,
    );
    loop {
        let signal = tokio::select! {
            // A shutdown is taken before anything else that is ready.
            biased;
            msg = control.recv() => match msg {
                Some(Control::Reload(reason)) => {
                    let stop = settle(&mut control).await;
                    match (stop, &reload_from) {
                        (Some(sig), _) => sig,
                        (None, Some((path, _))) => match reload_until_quiet(&mut sup, &mut control, path, reason).await {
                            Some(sig) => sig,
                            None => continue,
                        },
                        (None, None) => continue,
                    }
                }
                Some(Control::Shutdown(sig)) => sig,
                None => "control channel closed",
            },
            res = sup.task() => {
                return res.map(|_| ()).map_err(|e| RunError::Failed(format!("sync loop stopped unexpectedly: {e}")));
            }
        };
        info!(signal, "stopping: no new polls; waiting for an in-flight publish");
        cancel.cancel();
        tokio::select! {
            biased;
            Some(Control::Shutdown(again)) = next_shutdown(&mut control) => {
                warn!(signal = again, "second signal: exiting at once (a publish in flight is abandoned; the previous snapshot stays intact)");
                return Ok(());
            }
            finished = tokio::time::timeout(SHUTDOWN_GRACE, sup.task()) => {
                if finished.is_err() {
                    warn!("a publish did not finish within {SHUTDOWN_GRACE:?}; exiting anyway (the previous snapshot stays intact)");
                }
            }
        }
        info!("stopped; published files are kept");
        return Ok(());
    }
}

/// Reload from `path`, and again while reload requests came in during one (an edit that lands
/// after a reload read the file is not lost); a shutdown during a reload is taken at once,
/// whatever the reload is waiting for (the old loop's publish, a new output.dir, a bind), and
/// returned.
async fn reload_until_quiet(
    sup: &mut Supervisor,
    control: &mut mpsc::UnboundedReceiver<Control>,
    path: &Path,
    mut reason: ReloadReason,
) -> Option<&'static str> {
    loop {
        let mut again = None;
        let shutdown = tokio::select! {
            biased;
            Some(sig) = next_shutdown_noting_reloads(control, &mut again) => Some(sig),
            () = sup.reload(path, reason) => None,
        };
        match (shutdown, again) {
            (Some(sig), _) => return Some(sig),
            (None, Some(next)) => {
                // The edit that came in may still be being written: let it settle first.
                reason = next;
                if let Some(sig) = settle(control).await {
                    return Some(sig);
                }
            }
            (None, None) => return None,
        }
    }
}

/// Debounce: wait until `control` has been quiet for `RELOAD_DEBOUNCE` (a ConfigMap update, an
/// editor's save, is a burst of events); a shutdown meanwhile is taken at once and returned.
async fn settle(control: &mut mpsc::UnboundedReceiver<Control>) -> Option<&'static str> {
    while let Ok(Some(more)) = tokio::time::timeout(RELOAD_DEBOUNCE, control.recv()).await {
        if let Control::Shutdown(sig) = more {
            return Some(sig);
        }
    }
    None
}

/// The next shutdown's signal on `control`; the last reload request seen meanwhile goes to
/// `reloads`.
async fn next_shutdown_noting_reloads(
    control: &mut mpsc::UnboundedReceiver<Control>,
    reloads: &mut Option<ReloadReason>,
) -> Option<&'static str> {
    loop {
        match control.recv().await {
            Some(Control::Shutdown(sig)) => return Some(sig),
            Some(Control::Reload(reason)) => *reloads = Some(reason),
            None => return std::future::pending().await,
        }
    }
}

/// The next shutdown on `control` (reloads are ignored once stopping).
async fn next_shutdown(control: &mut mpsc::UnboundedReceiver<Control>) -> Option<Control> {
    loop {
        match control.recv().await {
            Some(c @ Control::Shutdown(_)) => return Some(c),
            Some(Control::Reload(_)) => continue,
            None => return std::future::pending().await,
        }
    }
}

/// Whether `a` and `b` name one directory, however spelled (`/x/out`, `/x/./out`, a link to
/// it): a second writer on it would clean up the first one's snapshot in progress.
fn same_directory(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    a == b
        || match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
}

/// Create `dir` if needed and clean what an interrupted publish of ours left (blocking I/O, so
/// on a blocking thread). A failure is a runtime failure (exit 1 at start).
async fn open_files(dir: &Path, mode: u32) -> Result<Arc<FileOutput>, RunError> {
    let out = Arc::new(FileOutput::new(dir.to_path_buf(), mode));
    let prepared = out.clone();
    tokio::task::spawn_blocking(move || prepared.prepare())
        .await
        .map_err(|e| RunError::Failed(format!("failed to prepare output.dir: {e}")))?
        .map_err(|e| RunError::Failed(format!("failed to prepare output.dir: {e}")))?;
    Ok(out)
}

/// The webhook task, kept across reloads while its URL stays the same.
#[derive(Default)]
struct Hook {
    url: Option<url::Url>,
    tx: Option<mpsc::UnboundedSender<Notice>>,
    cancel: Option<CancellationToken>,
}

impl Hook {
    fn update(&mut self, cfg: &Config, parent: &CancellationToken) -> Option<mpsc::UnboundedSender<Notice>> {
        if cfg.on_change.webhook != self.url {
            if let Some(c) = self.cancel.take() {
                c.cancel();
            }
            self.tx = None;
            self.url = cfg.on_change.webhook.clone();
            if let Some(url) = &self.url {
                // A webhook never blocks syncing: one that cannot be set up is logged and skipped.
                match Webhook::new(url.clone(), Delivery::default()) {
                    Ok(webhook) => {
                        let cancel = parent.child_token();
                        self.tx = Some(webhook.spawn(cancel.clone()));
                        self.cancel = Some(cancel);
                    }
                    Err(e) => error!(error = %e, "on_change.webhook disabled"),
                }
            }
        }
        self.tx.clone()
    }
}

/// The running sync loop of one config.
struct Running {
    cfg: Config,
    task: tokio::task::JoinHandle<sync::Stopped>,
    /// Cancels this loop only: a reload stops it and starts the next.
    cancel: CancellationToken,
    /// Its writer, which the next loop keeps when `output.dir` stays.
    files: Option<Arc<FileOutput>>,
}

struct Supervisor {
    build: Build,
    env: Vec<(String, String)>,
    published: Arc<Published>,
    health: Arc<Health>,
    listeners: Listeners,
    hook: Hook,
    cancel: CancellationToken,
    running: Option<Running>,
}

impl Supervisor {
    fn start(&mut self, cfg: Config, mut pipeline: sync::Pipeline, initial: sync::Stopped, republish: bool) {
        pipeline.notify = self.hook.update(&cfg, &self.cancel);
        let cancel = self.cancel.child_token();
        let files = pipeline.files.clone();
        let (published, health) = (self.published.clone(), self.health.clone());
        let task = tokio::spawn(sync::run(pipeline, published, health, initial, republish, cancel.clone()));
        self.running = Some(Running { cfg, task, cancel, files });
    }

    /// The running loop's task (it ends only on cancel, or by a panic).
    async fn task(&mut self) -> Result<sync::Stopped, tokio::task::JoinError> {
        match &mut self.running {
            Some(r) => (&mut r.task).await,
            None => std::future::pending().await,
        }
    }

    /// Re-read and validate the config; apply it if it is valid and different, else keep
    /// running the old one. The caller drops this future when a shutdown comes: until the old
    /// loop has stopped, it stays `running` (the shutdown waits for it).
    async fn reload(&mut self, path: &Path, reason: ReloadReason) {
        let metrics = self.health.metrics.clone();
        let rejected = |e: &dyn std::fmt::Display| {
            metrics.config_reload(false);
            warn!(?reason, error = %e, "config reload rejected; the running config stays");
        };
        let new = match config::load(path, &self.env) {
            Ok(c) => c,
            Err(e) => {
                rejected(&e);
                return;
            }
        };
        let Some(old) = self.running.as_ref().map(|r| r.cfg.clone()) else { return };
        if new == old {
            debug!(?reason, "config unchanged");
            return;
        }
        debug!(?reason, "config changed; applying it");
        let mut built = match (self.build)(&new, &self.env, metrics.clone()) {
            Ok(b) => b,
            Err(e) => {
                rejected(&e);
                return;
            }
        };
        // One writer per directory: an unchanged output.dir keeps its writer.
        let same_dir = match (&old.output.dir, &new.output.dir) {
            (Some(a), Some(b)) => same_directory(a, b),
            _ => false,
        };
        built.pipeline.files = match (&new.output.dir, same_dir) {
            (Some(_), true) => self.current_files(),
            (Some(dir), false) => match open_files(dir, new.output.file_mode).await {
                Ok(f) => Some(f),
                Err(e) => {
                    rejected(&e);
                    return;
                }
            },
            (None, _) => None,
        };
        if let Some(files) = &built.pipeline.files {
            files.set_file_mode(new.output.file_mode);
        }
        if let Err(e) = self.listeners.apply(&new, &self.published, &self.health).await {
            rejected(&e);
            return;
        }
        self.health.set_stale_after(crate::health::stale_after(&new.sync));
        crate::logging::reload(&new.log);

        // Stop the old loop and wait for it (its publish in flight finishes first).
        let Some(running) = self.running.as_mut() else { return };
        running.cancel.cancel();
        // A loop that outlived the wait is abandoned with the changes it had not notified.
        let last = match tokio::time::timeout(SHUTDOWN_GRACE, &mut running.task).await {
            Ok(Ok(last)) => last,
            _ => sync::Stopped { snapshot: self.published.current().unwrap_or_default(), unsent: Vec::new() },
        };
        self.running = None;
        let ids = config::source_ids(&new.sources);
        let (kept, _) = last.snapshot.retain_sources(&ids);
        info!(?reason, identity = %built.identity, sources = ids.len(), interval = %config::format_duration(new.sync.interval), "config reloaded");
        metrics.config_reload(true);
        self.start(new, built.pipeline, sync::Stopped { snapshot: Arc::new(kept), unsent: last.unsent }, true);
    }

    fn current_files(&self) -> Option<Arc<FileOutput>> {
        self.running.as_ref().and_then(|r| r.files.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::same_directory;

    #[test]
    fn one_directory_however_spelled_is_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&out, tmp.path().join("alias")).unwrap();
        assert!(same_directory(&out, &out));
        assert!(same_directory(&out, &tmp.path().join("./out")));
        assert!(same_directory(&out, &tmp.path().join("out/../out")));
        assert!(same_directory(&out, &tmp.path().join("alias")));
        std::fs::create_dir(tmp.path().join("other")).unwrap();
        assert!(!same_directory(&out, &tmp.path().join("other")));
        assert!(!same_directory(&out, &tmp.path().join("missing")));
    }
}
