//! The runtime around the data path: the sync loop (`sync`), its supervisor (`supervise`:
//! listeners, reloads, shutdown), the one place that owns signals (`signals`), and the control
//! channel they feed. Shutdown is one `CancellationToken` handed down from here; nothing else
//! installs a signal handler.

use std::time::Duration;

use crate::config::ConfigError;

pub mod listeners;
pub mod signals;
pub mod supervise;
pub mod sync;
pub mod timer;
pub mod watch;

/// Why the runtime was asked to reload its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadReason {
    Sighup,
    ConfigChanged,
}

/// The one control channel: fed by the signal thread and the config watcher (`watch.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload(ReloadReason),
    /// SIGTERM or SIGINT; the name is for the log.
    Shutdown(&'static str),
}

/// What the runtime reports to its caller: a config it cannot build, or a runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Failed(String),
}

/// Run `f` on the one current-thread runtime the process uses, then drop what is still running.
pub fn block_on<T, E: From<RunError>>(f: impl std::future::Future<Output = Result<T, E>>) -> Result<T, E> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // A publish's blocking thread waits for the next one instead of exiting 10 s later:
        // between polls, nothing wakes the process.
        .thread_keep_alive(Duration::MAX)
        .build()
        .map_err(|e| RunError::Failed(format!("failed to start the async runtime: {e}")))?;
    let result = rt.block_on(f);
    // A publish still running past the grace period is abandoned, not waited for.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}
