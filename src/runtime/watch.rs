//! The config watcher: notify on the config file's directory, not the file. A ConfigMap volume
//! updates by writing a new `..<timestamp>` dir and swapping the `..data` symlink, so the file's
//! own inode never changes; any event in the directory asks for a reload, and the reload
//! re-resolves the path. Bursts are debounced by the receiver (`app`).

use std::path::Path;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Control, ReloadReason};

/// Watch the directory holding `config`. Keep the returned watcher alive as long as needed.
pub fn watch_config(config: &Path, tx: mpsc::UnboundedSender<Control>) -> notify::Result<notify::RecommendedWatcher> {
    let dir = match config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            if !e.kind.is_access() {
                let _ = tx.send(Control::Reload(ReloadReason::ConfigChanged));
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
