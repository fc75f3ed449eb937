//! The Kubernetes AtomicWriter layout: a `..<timestamp>` snapshot dir, `..data` swapped by
//! renaming a new symlink over it, top-level links into `..data`.
//!
//! ```text
//! dir/..2026_11_23_07_00_00.123456789/db/password
//! dir/..data -> ..2026_11_23_07_00_00.123456789
//! dir/db -> ..data/db
//! ```
//!
//! A publish writes a complete new snapshot dir (each file created with its final mode,
//! written and fsync'ed), then swaps `..data` in one rename, so a reader that resolves `..data`
//! once sees the whole old set or the whole new set. Published snapshot dirs are never written
//! again; the old one is removed only after the swap. Names starting with `..` belong to the
//! writer; every other name in `dir` that is not one of our top-level links (the HTTP token
//! file `.sidecar-token`, say) is left alone. The code is blocking: callers use
//! `spawn_blocking`.
//!
//! A restart over an existing directory (an `emptyDir` outlives its containers) adopts it:
//! `prepare` removes what an interrupted publish left and keeps the published snapshot, which
//! the app goes on reading; the first publish that carries exactly the same files (bytes and
//! mode) only checks the top-level links instead of writing and swapping, so a restart does not
//! look like a change to apps that watch `..data`.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::PublishError;
use crate::snapshot::Snapshot;

/// The link to the current snapshot dir.
const DATA: &str = "..data";
/// The new `..data` link before it is renamed over the old one.
const DATA_TMP: &str = "..data_tmp";
/// A top-level link before it is renamed over a wrong entry.
const LINK_TMP: &str = "..link_tmp";
/// Snapshot dirs and their subdirectories.
const DIR_MODE: u32 = 0o755;

/// Publishes snapshots into `dir` in the AtomicWriter layout.
pub struct FileOutput {
    dir: PathBuf,
    file_mode: u32,
    /// The last snapshot-dir stamp used, in nanoseconds since the epoch. Held for the whole
    /// publish: publishes never interleave, and each gets a stamp above the last one even when
    /// the clock has not moved. A std Mutex because publish is blocking code.
    last_stamp: Mutex<u128>,
    /// Set by `prepare` when it found a published snapshot; the first publish compares against
    /// it and clears it.
    adopting: std::sync::atomic::AtomicBool,
}

impl FileOutput {
    pub fn new(dir: PathBuf, file_mode: u32) -> Self {
        FileOutput { dir, file_mode, last_stamp: Mutex::new(0), adopting: std::sync::atomic::AtomicBool::new(false) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Create `dir` if missing and remove what an interrupted publish left behind: the
    /// temporary links and snapshot dirs that `..data` does not point to.
    pub fn prepare(&self) -> Result<(), PublishError> {
        let _publishing = self.last_stamp.lock().unwrap_or_else(|e| e.into_inner());
        fs::create_dir_all(&self.dir).map_err(|e| PublishError::new("create directory", &self.dir, e))?;
        let current = read_data_link(&self.dir);
        let entries = fs::read_dir(&self.dir).map_err(|e| PublishError::new("list directory", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| PublishError::new("list directory", &self.dir, e))?;
            let name = entry.file_name();
            let path = entry.path();
            if name == DATA_TMP || name == LINK_TMP || is_token_temp_name(&name) {
                remove_file_if_present(&path).map_err(|e| PublishError::new("remove leftover", &path, e))?;
            } else if is_snapshot_dir_name(&name) && current.as_deref() != Some(name.as_os_str()) {
                let is_dir = fs::symlink_metadata(&path).map(|m| m.is_dir()).unwrap_or(false);
                if is_dir {
                    fs::remove_dir_all(&path).map_err(|e| PublishError::new("remove leftover", &path, e))?;
                    tracing::info!(path = %path.display(), "removed a snapshot left by an interrupted publish");
                }
            }
        }
        let adopted = current.filter(|c| fs::symlink_metadata(self.dir.join(c)).is_ok_and(|m| m.is_dir()));
        if let Some(name) = &adopted {
            tracing::info!(dir = %self.dir.display(), snapshot = %name.to_string_lossy(), "found published files; they stay until the first publish");
        }
        self.adopting.store(adopted.is_some(), std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The snapshot dir `..data` points to, if any.
    pub fn current(&self) -> Option<PathBuf> {
        read_data_link(&self.dir).map(|name| self.dir.join(name))
    }

    /// Publish `snap`: write a new snapshot dir, swap `..data` to it, update the top-level
    /// links, remove the old snapshot dir. On an error before the swap the published set is
    /// unchanged; on an error after it (a top-level link) `..data` already holds `snap`.
    pub fn publish(&self, snap: &Snapshot) -> Result<(), PublishError> {
        let mut last_stamp = self.last_stamp.lock().unwrap_or_else(|e| e.into_inner());
        fs::create_dir_all(&self.dir).map_err(|e| PublishError::new("create directory", &self.dir, e))?;
        let tops: BTreeSet<&str> = snap.iter().map(|(p, _)| p.top()).collect();
        refuse_dirs_in_the_way(&self.dir, &tops)?;
        let old = read_data_link(&self.dir);
        if self.adopting.swap(false, std::sync::atomic::Ordering::SeqCst) {
            if let Some(current) = old.as_ref().filter(|o| holds(&self.dir.join(o), snap, self.file_mode)) {
                link_tops(&self.dir, &tops)?;
                unlink_stale_tops(&self.dir, &tops);
                tracing::info!(snapshot = %current.to_string_lossy(), "the published files already hold these values; kept as they are");
                return Ok(());
            }
        }
        let (name, root) = create_snapshot_dir(&self.dir, &mut last_stamp)?;
        if let Err(e) = write_tree(&root, snap, self.file_mode).and_then(|()| swap_data(&self.dir, &name)) {
            // Only a dir that `..data` does not point to may go (the swap may have failed after
            // the rename, at the fsync).
            if read_data_link(&self.dir).as_deref() != Some(name.as_os_str()) {
                let _ = fs::remove_dir_all(&root);
            }
            return Err(e);
        }
        link_tops(&self.dir, &tops)?;
        unlink_stale_tops(&self.dir, &tops);
        if let Some(old) = old.filter(|o| *o != name && is_snapshot_dir_name(o)) {
            let path = self.dir.join(old);
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!("failed to remove the previous snapshot {}: {e}", path.display());
            }
        }
        Ok(())
    }
}

/// Whether the snapshot dir `root` holds exactly the files of `snap`: the same paths (and no
/// other entry), the same bytes, mode `file_mode`. Any doubt (an unreadable entry, a link) is a
/// no.
fn holds(root: &Path, snap: &Snapshot, file_mode: u32) -> bool {
    let mut on_disk = Vec::new();
    if !list_files(root, Path::new(""), &mut on_disk) || on_disk.len() != snap.len() {
        return false;
    }
    snap.iter().all(|(path, entry)| {
        let file = root.join(path.as_str());
        let same_mode =
            fs::symlink_metadata(&file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o7777 == file_mode);
        same_mode
            && fs::read(&file).is_ok_and(|bytes| zeroize::Zeroizing::new(bytes).as_slice() == entry.value.expose())
    })
}

/// The regular files below `dir` (relative to the walk's root) into `out`; false when an entry
/// is neither a file nor a directory or cannot be read.
fn list_files(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let Ok(kind) = entry.file_type() else { return false };
        let rel = rel.join(entry.file_name());
        if kind.is_dir() {
            if !list_files(&entry.path(), &rel, out) {
                return false;
            }
        } else if kind.is_file() {
            out.push(rel);
        } else {
            return false;
        }
    }
    true
}

/// The name `..data` points to.
fn read_data_link(dir: &Path) -> Option<OsString> {
    fs::read_link(dir.join(DATA)).ok().map(PathBuf::into_os_string)
}

/// `.<name>.tmp-<pid>-<8 hex>`: the HTTP token file before its rename into place
/// (`output::serve`), left behind when the process died in between.
fn is_token_temp_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    let Some((head, tail)) = name.rsplit_once(".tmp-") else { return false };
    let Some((pid, hex)) = tail.split_once('-') else { return false };
    head.len() > 1
        && head.starts_with('.')
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && hex.len() == 8
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A name of the `..<timestamp>` form: ours (or the kubelet's), never a `RelPath` top.
fn is_snapshot_dir_name(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b.len() > 2 && b.starts_with(b"..") && b[2].is_ascii_digit()
}

/// Create the new snapshot dir `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` (UTC), with a stamp above
/// `last_stamp` and not taken on disk.
fn create_snapshot_dir(dir: &Path, last_stamp: &mut u128) -> Result<(OsString, PathBuf), PublishError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut stamp = now.max(*last_stamp + 1);
    loop {
        let name = stamp_name(stamp);
        let path = dir.join(&name);
        match DirBuilder::new().mode(DIR_MODE).create(&path) {
            Ok(()) => {
                *last_stamp = stamp;
                set_mode(&path, DIR_MODE)?;
                return Ok((name.into(), path));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => stamp += 1,
            Err(e) => return Err(PublishError::new("create snapshot directory", path, e)),
        }
    }
}

/// `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` for a UTC time in nanoseconds since the epoch.
fn stamp_name(nanos: u128) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let frac = nanos % 1_000_000_000;
    let (y, m, d, hh, mm, ss) = sidecar_core::utc::parts(secs);
    format!("..{y:04}_{m:02}_{d:02}_{hh:02}_{mm:02}_{ss:02}.{frac:09}")
}

/// Write every entry of `snap` below `root`, then fsync the directories, deepest first.
fn write_tree(root: &Path, snap: &Snapshot, file_mode: u32) -> Result<(), PublishError> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for (path, entry) in snap.iter() {
        let segments: Vec<&str> = path.segments().collect();
        let mut dir = root.to_path_buf();
        for segment in &segments[..segments.len() - 1] {
            dir.push(segment);
            if dirs.insert(dir.clone()) {
                make_dir(&dir)?;
            }
        }
        write_file(&dir.join(segments[segments.len() - 1]), entry.value.expose(), file_mode)?;
    }
    // Reverse path order puts every directory before its parent.
    for dir in dirs.iter().rev() {
        sync_dir(dir)?;
    }
    sync_dir(root)
}

fn make_dir(path: &Path) -> Result<(), PublishError> {
    DirBuilder::new().mode(DIR_MODE).create(path).map_err(|e| PublishError::new("create directory", path, e))?;
    set_mode(path, DIR_MODE)
}

/// Create `path` with its final mode (never wider on the way: the umask can only narrow the
/// create mode, and the fchmod then sets exactly `mode`), write it, fsync it.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PublishError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| PublishError::new("create file", path, e))?;
    file.set_permissions(Permissions::from_mode(mode)).map_err(|e| PublishError::new("set the mode of", path, e))?;
    file.write_all(bytes).map_err(|e| PublishError::new("write", path, e))?;
    file.sync_all().map_err(|e| PublishError::new("fsync", path, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PublishError> {
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|e| PublishError::new("set the mode of", path, e))
}

fn sync_dir(path: &Path) -> Result<(), PublishError> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| PublishError::new("fsync directory", path, e))
}

fn remove_file_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Point `..data` at `name` in one rename, and make the rename durable.
fn swap_data(dir: &Path, name: &OsStr) -> Result<(), PublishError> {
    let tmp = dir.join(DATA_TMP);
    remove_file_if_present(&tmp).map_err(|e| PublishError::new("remove stale link", &tmp, e))?;
    symlink(name, &tmp).map_err(|e| PublishError::new("create symlink", &tmp, e))?;
    let data = dir.join(DATA);
    fs::rename(&tmp, &data).map_err(|e| PublishError::new("swap", &data, e))?;
    sync_dir(dir)
}

/// A real directory where a top-level link must go is not ours to remove: refuse before
/// anything is written.
fn refuse_dirs_in_the_way(dir: &Path, tops: &BTreeSet<&str>) -> Result<(), PublishError> {
    for top in tops {
        let path = dir.join(top);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Err(PublishError::new("replace with a link", path, io::ErrorKind::IsADirectory.into()));
        }
    }
    Ok(())
}

/// Make `dir/<top>` a link to `..data/<top>` for each top, replacing a wrong entry (a stale
/// file, a link elsewhere) in one rename. A real directory in the way is an error.
fn link_tops(dir: &Path, tops: &BTreeSet<&str>) -> Result<(), PublishError> {
    let mut changed = false;
    for top in tops {
        let link = dir.join(top);
        let target = Path::new(DATA).join(top);
        match fs::read_link(&link) {
            Ok(t) if t == target => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                symlink(&target, &link).map_err(|e| PublishError::new("create symlink", &link, e))?;
            }
            _ => {
                let tmp = dir.join(LINK_TMP);
                remove_file_if_present(&tmp).map_err(|e| PublishError::new("remove stale link", &tmp, e))?;
                symlink(&target, &tmp).map_err(|e| PublishError::new("create symlink", &tmp, e))?;
                fs::rename(&tmp, &link).map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    PublishError::new("replace with a link", &link, e)
                })?;
            }
        }
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Remove our top-level links (`<name> -> ..data/<name>`) whose name is not in `tops`.
/// Anything else is left alone. Failures are logged: the new set is already published.
fn unlink_stale_tops(dir: &Path, tops: &BTreeSet<&str>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || tops.contains(name) {
            continue;
        }
        let path = entry.path();
        if fs::read_link(&path).is_ok_and(|t| t == Path::new(DATA).join(name)) {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!("failed to remove the stale link {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::source::{Object, Polled};
    use sidecar_core::relpath::RelPath;
    use sidecar_core::secret::SecretValue;

    fn snapshot(objects: &[(&str, &[u8])]) -> Snapshot {
        let objects = objects
            .iter()
            .map(|(path, value)| Object {
                path: RelPath::parse(path).unwrap(),
                value: SecretValue::new(value.to_vec()),
                version: "v".into(),
                updated: None,
                required: false,
            })
            .collect();
        Snapshot::new().apply("test", &Ok(Polled { objects, failures: vec![] })).snapshot
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn dotdot_dirs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| is_snapshot_dir_name(OsStr::new(n)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stamp_names_are_utc_with_nanoseconds() {
        assert_eq!(stamp_name(0), "..1970_01_01_00_00_00.000000000");
        assert_eq!(stamp_name(1_767_225_600_000_000_007), "..2026_01_01_00_00_00.000000007");
        // 2000-02-29T23:59:59.999999999Z: a leap day.
        assert_eq!(stamp_name(951_868_799_999_999_999), "..2000_02_29_23_59_59.999999999");
        assert_eq!(stamp_name(4_102_444_800_000_000_000), "..2100_01_01_00_00_00.000000000");
    }

    #[test]
    fn one_publish_writes_the_atomic_writer_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let out = FileOutput::new(tmp.path().join("secrets"), 0o440);
        out.prepare().unwrap();
        out.publish(&snapshot(&[("db/password", b"s3cret"), ("db/user", b"app"), ("api-key", b"k")])).unwrap();

        let dir = out.dir();
        let data = fs::read_link(dir.join("..data")).unwrap();
        let data_name = data.to_str().unwrap();
        assert!(data.is_relative());
        assert_eq!(data_name.len(), "..2026_11_23_07_00_00.123456789".len(), "{data_name}");
        assert!(is_snapshot_dir_name(OsStr::new(data_name)));
        assert_eq!(out.current().unwrap(), dir.join(data_name));
        assert_eq!(fs::read_link(dir.join("db")).unwrap(), Path::new("..data/db"));
        assert_eq!(fs::read_link(dir.join("api-key")).unwrap(), Path::new("..data/api-key"));
        assert_eq!(fs::read(dir.join("db/password")).unwrap(), b"s3cret");
        assert_eq!(fs::read(dir.join(data_name).join("db/user")).unwrap(), b"app");
        assert_eq!(mode_of(&dir.join(data_name).join("db/password")), 0o440);
        assert_eq!(mode_of(&dir.join(data_name).join("api-key")), 0o440);
        assert_eq!(mode_of(&dir.join(data_name).join("db")), 0o755);
        assert_eq!(mode_of(&dir.join(data_name)), 0o755);
        assert!(!dir.join("..data_tmp").exists());
    }

    #[test]
    fn file_mode_is_exact_even_where_the_umask_would_narrow_it() {
        let tmp = tempfile::tempdir().unwrap();
        let out = FileOutput::new(tmp.path().to_path_buf(), 0o666);
        out.publish(&snapshot(&[("a", b"x")])).unwrap();
        assert_eq!(mode_of(&out.current().unwrap().join("a")), 0o666);
    }

    #[test]
    fn any_bytes_are_written_as_they_are() {
        let tmp = tempfile::tempdir().unwrap();
        let out = FileOutput::new(tmp.path().to_path_buf(), 0o440);
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        out.publish(&snapshot(&[("bin", &all), ("empty", b"")])).unwrap();
        assert_eq!(fs::read(tmp.path().join("bin")).unwrap(), all);
        assert_eq!(fs::read(tmp.path().join("empty")).unwrap(), b"");
    }

    #[test]
    fn second_publish_swaps_data_and_removes_the_old_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let out = FileOutput::new(tmp.path().to_path_buf(), 0o440);
        out.publish(&snapshot(&[("a", b"one")])).unwrap();
        let first = out.current().unwrap();
        out.publish(&snapshot(&[("a", b"two")])).unwrap();
        let second = out.current().unwrap();
        assert_ne!(first, second);
        assert!(!first.exists());
        assert_eq!(fs::read(tmp.path().join("a")).unwrap(), b"two");
        assert_eq!(dotdot_dirs(tmp.path()), vec![second.file_name().unwrap().to_str().unwrap().to_string()]);
    }

    #[test]
    fn publishes_in_the_same_nanosecond_get_distinct_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        const YEAR_2100: u128 = 4_102_444_800_000_000_000; // the clock cannot move past it
        let mut last = YEAR_2100;
        let (a, _) = create_snapshot_dir(tmp.path(), &mut last).unwrap();
        let (b, _) = create_snapshot_dir(tmp.path(), &mut last).unwrap();
        assert_ne!(a, b);
        // A stamp taken on disk (another writer, a restart) is skipped too.
        let mut behind = YEAR_2100;
        let (c, _) = create_snapshot_dir(tmp.path(), &mut behind).unwrap();
        assert!(c != a && c != b);
    }

    #[test]
    fn removed_top_level_names_are_unlinked() {
        let tmp = tempfile::tempdir().unwrap();
        let out = FileOutput::new(tmp.path().to_path_buf(), 0o440);
        out.publish(&snapshot(&[("a", b"1"), ("b/c", b"2"), ("d", b"3")])).unwrap();
        out.publish(&snapshot(&[("a", b"1")])).unwrap();
        assert!(fs::symlink_metadata(tmp.path().join("b")).is_err());
        assert!(fs::symlink_metadata(tmp.path().join("d")).is_err());
        assert_eq!(fs::read(tmp.path().join("a")).unwrap(), b"1");
    }

    #[test]
    fn foreign_entries_are_left_alone_and_a_stale_file_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(".sidecar-token"), b"tok").unwrap();
        fs::write(dir.join("notes.txt"), b"mine").unwrap();
        symlink("/etc/hostname", dir.join("elsewhere")).unwrap();
        fs::write(dir.join("a"), b"stale").unwrap();
        let out = FileOutput::new(dir.to_path_buf(), 0o440);
        out.publish(&snapshot(&[("a", b"fresh")])).unwrap();
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"fresh");
        assert_eq!(fs::read(dir.join(".sidecar-token")).unwrap(), b"tok");
        assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"mine");
        assert_eq!(fs::read_link(dir.join("elsewhere")).unwrap(), Path::new("/etc/hostname"));
    }

    #[test]
    fn a_directory_in_the_way_of_a_top_level_link_fails_the_publish_before_the_swap() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("db")).unwrap();
        fs::write(tmp.path().join("db/keep"), b"mine").unwrap();
        let out = FileOutput::new(tmp.path().to_path_buf(), 0o440);
        let err = out.publish(&snapshot(&[("db/password", b"x")])).unwrap_err();
        assert_eq!(err.path, tmp.path().join("db"));
        assert!(err.to_string().starts_with("failed to replace with a link"), "{err}");
        assert_eq!(fs::read(tmp.path().join("db/keep")).unwrap(), b"mine");
        assert!(out.current().is_none());
        assert!(dotdot_dirs(tmp.path()).is_empty());
    }

    #[test]
    fn prepare_cleans_leftovers_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let out = FileOutput::new(dir.clone(), 0o440);
        out.prepare().unwrap();
        out.publish(&snapshot(&[("a", b"1")])).unwrap();
        let current = out.current().unwrap();
        // What a publish killed half-way leaves behind.
        let stray = dir.join("..2020_01_01_00_00_00.000000000");
        fs::create_dir_all(stray.join("sub")).unwrap();
        fs::write(stray.join("sub/f"), b"partial").unwrap();
        symlink("..2020_01_01_00_00_00.000000000", dir.join("..data_tmp")).unwrap();
        symlink("..data/x", dir.join("..link_tmp")).unwrap();
        fs::write(dir.join(".sidecar-token.tmp-123-0badcafe"), b"half").unwrap();
        fs::write(dir.join(".sidecar-token.tmp-notmine"), b"kept").unwrap();
        fs::write(dir.join(".sidecar-token"), b"tok").unwrap();
        fs::write(dir.join("other"), b"mine").unwrap();

        out.prepare().unwrap();
        assert!(!stray.exists());
        assert!(fs::symlink_metadata(dir.join("..data_tmp")).is_err());
        assert!(fs::symlink_metadata(dir.join("..link_tmp")).is_err());
        assert!(fs::symlink_metadata(dir.join(".sidecar-token.tmp-123-0badcafe")).is_err());
        assert_eq!(fs::read(dir.join(".sidecar-token.tmp-notmine")).unwrap(), b"kept");
        assert_eq!(out.current().unwrap(), current);
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"1");
        assert_eq!(fs::read(dir.join(".sidecar-token")).unwrap(), b"tok");
        assert_eq!(fs::read(dir.join("other")).unwrap(), b"mine");
    }

    #[test]
    fn a_restart_adopts_the_published_snapshot_when_it_holds_the_same_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let first = FileOutput::new(dir.clone(), 0o440);
        first.prepare().unwrap();
        let snap = snapshot(&[("a", b"1"), ("db/password", b"pw")]);
        first.publish(&snap).unwrap();
        let published = first.current().unwrap();
        fs::remove_file(dir.join("a")).unwrap(); // a top-level link lost meanwhile

        // The next process: the same values keep the same snapshot dir (no ..data swap).
        let second = FileOutput::new(dir.clone(), 0o440);
        second.prepare().unwrap();
        second.publish(&snap).unwrap();
        assert_eq!(second.current().unwrap(), published);
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"1", "the lost link is restored");
        // Adoption is for the first publish only: later ones always write.
        second.publish(&snap).unwrap();
        assert_ne!(second.current().unwrap(), published);

        // A different value, a different mode or an extra file: a real publish.
        for (mode, objects) in [
            (0o440, vec![("a", &b"2"[..]), ("db/password", &b"pw"[..])]),
            (0o400, vec![("a", &b"1"[..]), ("db/password", &b"pw"[..])]),
            (0o440, vec![("a", &b"1"[..])]),
        ] {
            let before = FileOutput::new(dir.clone(), 0o440);
            before.prepare().unwrap();
            before.publish(&snap).unwrap();
            let current = before.current().unwrap();
            let next = FileOutput::new(dir.clone(), mode);
            next.prepare().unwrap();
            next.publish(&snapshot(&objects)).unwrap();
            assert_ne!(next.current().unwrap(), current, "mode {mode:o}, {} objects", objects.len());
            assert_eq!(dotdot_dirs(&dir).len(), 1);
        }
    }

    #[test]
    fn prepare_creates_a_missing_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let out = FileOutput::new(tmp.path().join("a/b"), 0o440);
        out.prepare().unwrap();
        assert!(tmp.path().join("a/b").is_dir());
        assert!(out.current().is_none());
    }

    const PATHS: [&str; 4] = ["a", "db/password", "db/user", "deep/x/y/z"];

    /// A value that names its generation and path, long enough that a torn write would show.
    fn value(generation: u32, path: &str) -> Vec<u8> {
        format!("{generation:06}|{path}|").repeat(2048).into_bytes()
    }

    /// Read every file under the dir `..data` points to. `None` when the dir went away
    /// mid-read or `..data` moved meanwhile (a retry); otherwise the one generation seen.
    fn read_generation(dir: &Path) -> Option<u32> {
        let before = fs::read_link(dir.join("..data")).ok()?;
        let mut generations = BTreeSet::new();
        for path in PATHS {
            let bytes = match fs::read(dir.join(&before).join(path)) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
                Err(e) => panic!("reading {path}: {e}"),
            };
            let generation: u32 = std::str::from_utf8(&bytes[..6]).unwrap().parse().unwrap();
            assert_eq!(bytes, value(generation, path), "torn or foreign content in {path}");
            generations.insert(generation);
        }
        assert_eq!(generations.len(), 1, "mixed generations {generations:?} under one ..data");
        let after = fs::read_link(dir.join("..data")).ok()?;
        (before == after).then(|| generations.into_iter().next().unwrap())
    }

    #[test]
    fn readers_never_see_a_torn_file_or_a_mixed_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let out = FileOutput::new(dir.clone(), 0o440);
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (dir, done) = (dir.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut full, mut retries, mut last) = (0u32, 0u32, 0u32);
                while !done.load(Ordering::Acquire) {
                    match read_generation(&dir) {
                        Some(generation) => {
                            assert!(generation >= last, "went back from generation {last} to {generation}");
                            last = generation;
                            full += 1;
                        }
                        None => retries += 1,
                    }
                }
                (full, retries)
            })
        };
        for generation in 1..=50 {
            let values: Vec<(String, Vec<u8>)> = PATHS.iter().map(|p| (p.to_string(), value(generation, p))).collect();
            let objects: Vec<(&str, &[u8])> = values.iter().map(|(p, v)| (p.as_str(), v.as_slice())).collect();
            out.publish(&snapshot(&objects)).unwrap();
        }
        done.store(true, Ordering::Release);
        let (full, retries) = reader.join().unwrap();
        assert!(full > 0, "no full read succeeded ({retries} retries)");
        assert_eq!(read_generation(&dir), Some(50));
        assert_eq!(dotdot_dirs(&dir).len(), 1);
    }
}
