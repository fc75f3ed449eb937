//! The runtime around the data path: the sync loop (`sync`), the one place that owns signals
//! (`signals`), and the control channel they feed. Shutdown is one `CancellationToken` handed
//! down from here; nothing else installs a signal handler.

pub mod signals;
pub mod sync;
pub mod timer;
pub mod watch;

/// Why the runtime was asked to reload its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadReason {
    Sighup,
    ConfigChanged,
}

/// The one control channel: fed by the signal thread (and, later, the config watcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload(ReloadReason),
    /// SIGTERM or SIGINT; the name is for the log.
    Shutdown(&'static str),
}
