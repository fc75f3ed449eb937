//! The config watcher: notify on the config file's directory, not the file. A ConfigMap volume
//! updates by writing a new `..<timestamp>` dir and swapping the `..data` symlink, so the file's
//! own inode never changes. An event asks for a reload when it names the config file, a
//! `..`-prefixed entry (the ConfigMap's `..data` and its snapshots) or the entry the config's
//! own link points into; other files in the directory (a log redirected there, an editor's swap
//! file) do not: each reload of an unchanged config would log, and a log there would feed it.
//! The reload re-resolves the path. Bursts are debounced by the receiver (`supervise`).

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Control, ReloadReason};

/// Watch the directory holding `config`. Keep the returned watcher alive as long as needed.
pub fn watch_config(config: &Path, tx: mpsc::UnboundedSender<Control>) -> notify::Result<notify::RecommendedWatcher> {
    let dir = match config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let config = config.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            // No paths, or a rescan: events were lost, so any of them may have been the config's.
            let lost = e.paths.is_empty() || e.need_rescan();
            if !e.kind.is_access() && (lost || e.paths.iter().any(|p| concerns_config(p, &config))) {
                let _ = tx.send(Control::Reload(ReloadReason::ConfigChanged));
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether an event on `path` (in the config's directory) may have changed what `config` reads.
fn concerns_config(path: &Path, config: &Path) -> bool {
    let Some(name) = path.file_name() else { return true };
    if Some(name) == config.file_name() || name.as_encoded_bytes().starts_with(b"..") {
        return true;
    }
    // `config.yaml -> real/config.yaml`, `-> ./v2.yaml` (and on from there): the entries the
    // links go through.
    link_entries(config).iter().any(|entry| entry == name)
}

/// The entries of the config's directory that its chain of links goes through, relative or
/// absolute (up to eight links; a link out of the directory ends the chain: events there are
/// not watched), and the entry the fully resolved config lies under.
fn link_entries(config: &Path) -> Vec<OsString> {
    let dir = config.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(dir) = std::fs::canonicalize(dir) else { return Vec::new() };
    let mut entries = Vec::new();
    // Where the whole chain ends, as the kernel resolves it (links in any component, `..`,
    // absolute links through a linked path): the entry of the directory it lies under.
    if let Ok(real) = std::fs::canonicalize(config) {
        if let Some(Component::Normal(entry)) = real.strip_prefix(&dir).ok().and_then(|r| r.components().next()) {
            entries.push(entry.to_os_string());
        }
    }
    let mut at = dir.join(config.file_name().unwrap_or_default());
    while entries.len() < 8 {
        let Ok(target) = std::fs::read_link(&at) else { break };
        // Where the link points, spelled from the root without `.` (a `..` ends the chain).
        let from = if target.is_absolute() { PathBuf::new() } else { at.parent().unwrap_or(&dir).to_path_buf() };
        let mut resolved = from;
        for part in target.components() {
            match part {
                Component::CurDir => {}
                Component::ParentDir => return entries,
                other => resolved.push(other),
            }
        }
        match resolved.strip_prefix(&dir).ok().and_then(|rest| rest.components().next()) {
            Some(Component::Normal(entry)) => entries.push(entry.to_os_string()),
            _ => break,
        }
        at = resolved;
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_config_its_link_and_configmap_entries_concern_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "x").unwrap();
        for name in ["config.yaml", "..data", "..data_tmp", "..2026_12_02_08_00_00.123456789"] {
            assert!(concerns_config(&dir.path().join(name), &config), "{name}");
        }
        for name in ["sidecar.log", ".config.yaml.swp", "4913", "other.yaml"] {
            assert!(!concerns_config(&dir.path().join(name), &config), "{name}");
        }
        let linked = dir.path().join("linked.yaml");
        std::os::unix::fs::symlink("real/config.yaml", &linked).unwrap();
        assert!(concerns_config(&dir.path().join("real"), &linked));
        assert!(!concerns_config(&dir.path().join("unreal"), &linked));
        // `./v2.yaml`, and a chain of links in the directory: every entry on the way.
        let dotted = dir.path().join("dotted.yaml");
        std::os::unix::fs::symlink("./v2.yaml", &dotted).unwrap();
        assert!(concerns_config(&dir.path().join("v2.yaml"), &dotted));
        std::os::unix::fs::symlink("v3.yaml", dir.path().join("v2.yaml")).unwrap();
        assert!(concerns_config(&dir.path().join("v3.yaml"), &dotted), "the second link's target");
        assert!(!concerns_config(&dir.path().join("v4.yaml"), &dotted));
        // A link through a linked dir (`current -> v1`): the real dir's entry too, and a `..`.
        std::fs::create_dir(dir.path().join("v1")).unwrap();
        std::fs::write(dir.path().join("v1/config.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("v1", dir.path().join("current")).unwrap();
        let through = dir.path().join("through.yaml");
        std::os::unix::fs::symlink("current/config.yaml", &through).unwrap();
        assert!(concerns_config(&dir.path().join("current"), &through));
        assert!(concerns_config(&dir.path().join("v1"), &through), "the real dir, renamed over");
        let up = dir.path().join("up.yaml");
        std::os::unix::fs::symlink("v1/../v5.yaml", &up).unwrap();
        std::fs::write(dir.path().join("v5.yaml"), "x").unwrap();
        assert!(concerns_config(&dir.path().join("v5.yaml"), &up), "a link with ..");
    }

    /// A link spelled `./entry/...`, an absolute link into the same directory, or a link to a
    /// link: before 0034f76 any event in the directory reloaded; now the entry that changes is
    /// not recognised, so the edit or the swap is never applied.
    #[test]
    fn links_spelled_with_dot_absolute_or_chained_still_concern_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("v1")).unwrap();
        std::fs::write(dir.path().join("v1/config.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("v1", dir.path().join("current")).unwrap();
        std::fs::write(dir.path().join("config-v2.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("config-v2.yaml", dir.path().join("plain.yaml")).unwrap();
        let absolute = dir.path().join("config-v2.yaml").display().to_string();
        let mut missed = Vec::new();
        for (name, target, entry) in [
            ("dot.yaml", "./current/config.yaml", "current"),
            ("dot2.yaml", "./config-v2.yaml", "config-v2.yaml"),
            ("abs.yaml", absolute.as_str(), "config-v2.yaml"),
            ("chain.yaml", "plain.yaml", "config-v2.yaml"),
        ] {
            let config = dir.path().join(name);
            std::os::unix::fs::symlink(target, &config).unwrap();
            if !concerns_config(&dir.path().join(entry), &config) {
                missed.push(format!("{name} -> {target}: an event on {entry} is ignored"));
            }
        }
        assert!(missed.is_empty(), "{missed:#?}");
    }
}
