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
//! again; the old one is removed only after the swap. The code is blocking: callers use
//! `spawn_blocking`.
//!
//! The volume is shared with another trust domain (the app, or anything else that can write
//! it), so the writer removes, renames or replaces only what it created itself:
//! - the snapshot to remove after a swap is the one this process swapped in (or adopted), never
//!   what `..data` says at the time;
//! - `..data` is trusted only when it names one `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` component
//!   that is a real directory owned by this process's uid;
//! - every removal is of one name directly in `dir` (never a path with `/`, so no link in it is
//!   followed; `remove_dir_all` does not follow links below it);
//! - temporary links get a name unique to the publish;
//! - a top-level name is only ever created as our link `<top> -> ..data/<top>`; an entry of
//!   anyone else's there (an app's file, a real directory, a link elsewhere) is left alone and
//!   logged once, and the object stays reachable under `..data/<top>`.
//!
//! Foreign entries never fail a start, a reload or a publish.
//!
//! A restart over an existing directory (an `emptyDir` outlives its containers) adopts it:
//! `prepare` removes what an interrupted publish of ours left and keeps the published snapshot,
//! which the app goes on reading; the first publish that carries exactly the same files (bytes
//! and mode) only checks the top-level links instead of writing and swapping, so a restart does
//! not look like a change to apps that watch `..data`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::PublishError;
use crate::snapshot::Snapshot;

/// The link to the current snapshot dir.
const DATA: &str = "..data";
/// Prefix of the new `..data` link before it is renamed over the old one (a unique suffix
/// follows: a foreign file of a fixed name cannot block a publish).
const DATA_TMP: &str = "..data_tmp";
/// Snapshot dirs and their subdirectories (plus the setgid bit when `dir` has it: `fsGroup`).
const DIR_MODE: u32 = 0o755;
const SETGID: u32 = 0o2000;

/// Publishes snapshots into `dir` in the AtomicWriter layout.
pub struct FileOutput {
    dir: PathBuf,
    /// `output.file_mode` (a reload may change it; the writer stays).
    file_mode: AtomicU32,
    /// The uid whose entries are ours.
    uid: u32,
    /// Held for the whole publish (and `prepare`): publishes never interleave. A std Mutex
    /// because publish is blocking code.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last snapshot-dir stamp used, in nanoseconds since the epoch: each publish gets a
    /// stamp above the last one even when the clock has not moved.
    last_stamp: u128,
    /// The snapshot dir `..data` points to because this process swapped it in (or adopted it
    /// after checking it is ours): the one to remove after the next swap.
    ours: Option<OsString>,
    /// Set by `prepare` when it adopted a published snapshot; the first publish compares
    /// against it and clears it.
    adopting: bool,
    /// Foreign entries already logged (each is logged once).
    noted: BTreeSet<OsString>,
}

impl FileOutput {
    pub fn new(dir: PathBuf, file_mode: u32) -> Self {
        FileOutput {
            dir,
            file_mode: AtomicU32::new(file_mode),
            uid: rustix::process::geteuid().as_raw(),
            state: Mutex::new(State::default()),
        }
    }

    /// The mode of the files of the next publish.
    pub fn set_file_mode(&self, mode: u32) {
        self.file_mode.store(mode, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create `dir` if missing and remove what an interrupted publish of ours left behind: our
    /// temporary links and our snapshot dirs that `..data` does not point to. Foreign entries
    /// are logged once and left alone; only a `dir` that cannot be created or listed fails.
    pub fn prepare(&self) -> Result<(), PublishError> {
        let mut state = self.lock();
        fs::create_dir_all(&self.dir).map_err(|e| PublishError::new("create directory", &self.dir, e))?;
        let current = self.trusted_data_link(&mut state);
        let entries = fs::read_dir(&self.dir).map_err(|e| PublishError::new("list directory", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| PublishError::new("list directory", &self.dir, e))?;
            let name = entry.file_name();
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            let ours = meta.uid() == self.uid;
            if is_data_tmp_name(&name) || is_token_temp_name(&name) {
                if ours && !meta.is_dir() {
                    if let Err(e) = remove_file_if_present(&path) {
                        note(&mut state, &name, &format!("cannot remove a leftover of ours: {e}"));
                    }
                } else {
                    note(&mut state, &name, "a temporary name that is not ours; left alone");
                }
            } else if name.as_encoded_bytes().starts_with(b"..") && name != DATA {
                if current.as_deref() == Some(name.as_os_str()) {
                    continue;
                }
                if is_stamp_name(&name) && ours && meta.is_dir() {
                    match fs::remove_dir_all(&path) {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), "removed a snapshot left by an interrupted publish")
                        }
                        Err(e) => note(&mut state, &name, &format!("cannot remove a leftover snapshot of ours: {e}")),
                    }
                } else {
                    note(&mut state, &name, "a `..` entry that is not ours; left alone");
                }
            }
        }
        if let Some(name) = &current {
            tracing::info!(dir = %self.dir.display(), snapshot = %name.to_string_lossy(), "found published files; they stay until the first publish");
        }
        state.adopting = current.is_some();
        state.ours = current;
        Ok(())
    }

    /// The name `..data` points to when that is a snapshot dir of ours (one component of the
    /// stamp form, a real directory, owned by our uid); a `..data` of anything else is logged.
    fn trusted_data_link(&self, state: &mut State) -> Option<OsString> {
        self.name_a_fixed_data_link(state);
        let target = fs::read_link(self.dir.join(DATA)).ok()?.into_os_string();
        let ours = is_stamp_name(&target)
            && fs::symlink_metadata(self.dir.join(&target)).is_ok_and(|m| m.is_dir() && m.uid() == self.uid);
        if !ours {
            note(
                state,
                OsStr::new(DATA),
                "points to something that is not a snapshot of ours; nothing it names is touched",
            );
        }
        ours.then_some(target)
    }

    /// A `..data` of another uid in a sticky dir we do not own cannot be renamed over by us:
    /// every publish will fail until its owner or root removes it. Said once, at error level.
    fn name_a_fixed_data_link(&self, state: &mut State) {
        let (Ok(link), Ok(dir)) = (fs::symlink_metadata(self.dir.join(DATA)), fs::metadata(&self.dir)) else { return };
        let sticky = dir.mode() & 0o1000 != 0;
        if link.uid() == self.uid || !sticky || dir.uid() == self.uid || self.uid == 0 {
            return;
        }
        if state.noted.insert(OsString::from("..data (sticky)")) {
            tracing::error!(
                dir = %self.dir.display(),
                "output.dir: ..data belongs to uid {} and the directory is sticky (mode {:o}): only uid {} or root may                  replace it, so every publish fails (counted in sidecar_publish_total{{result=\"failure\"}}) until it                  is removed; remove {} as that uid (or give the pod a fresh volume)",
                link.uid(),
                dir.mode() & 0o7777,
                link.uid(),
                self.dir.join(DATA).display()
            );
        }
    }

    /// Publish `snap`: write a new snapshot dir, swap `..data` to it, remove the snapshot this
    /// process swapped in before, update the top-level links. On an error the published set is
    /// unchanged; once the swap is done the publish is done (a top-level link that cannot be
    /// placed is logged, the object stays reachable under `..data`).
    pub fn publish(&self, snap: &Snapshot) -> Result<(), PublishError> {
        let mut state = self.lock();
        let state = &mut *state;
        let file_mode = self.file_mode.load(Ordering::SeqCst);
        fs::create_dir_all(&self.dir).map_err(|e| PublishError::new("create directory", &self.dir, e))?;
        let tops: BTreeSet<&str> = snap.iter().map(|(p, _)| p.top()).collect();
        if std::mem::take(&mut state.adopting) {
            if let Some(current) = state.ours.clone().filter(|o| holds(&self.dir.join(o), snap, file_mode)) {
                self.link_tops(state, &tops);
                self.unlink_stale_tops(&tops);
                tracing::info!(snapshot = %current.to_string_lossy(), "the published files already hold these values; kept as they are");
                return Ok(());
            }
        }
        // A volume given by the kubelet with `fsGroup` is setgid and group-owned by that group:
        // keeping the bit on every dir below keeps every file in that group, so an app under
        // another uid in `fsGroup` reads them.
        let dir_mode = DIR_MODE | (fs::metadata(&self.dir).map(|m| m.mode()).unwrap_or(0) & SETGID);
        let (name, root, root_dir) = create_snapshot_dir(&self.dir, &mut state.last_stamp, dir_mode, self.uid)?;
        let written = write_tree(&root_dir, &root, snap, file_mode, dir_mode, self.uid);
        drop(root_dir);
        if let Err(e) = written.and_then(|()| swap_data(&self.dir, &name)) {
            // Before the swap: the new dir is not published, and goes.
            let _ = fs::remove_dir_all(&root);
            return Err(e);
        }
        self.swapped(state, name);
        self.link_tops(state, &tops);
        self.unlink_stale_tops(&tops);
        Ok(())
    }

    /// `..data` now points to `name`: remove the snapshot we swapped in before.
    fn swapped(&self, state: &mut State, name: OsString) {
        if let Some(old) = state.ours.replace(name).filter(|o| Some(o) != state.ours.as_ref()) {
            let path = self.dir.join(&old);
            let still_ours = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == self.uid);
            if still_ours {
                if let Err(e) = fs::remove_dir_all(&path) {
                    tracing::warn!("failed to remove the previous snapshot {}: {e}", path.display());
                }
            }
        }
    }

    /// Make `dir/<top>` our link to `..data/<top>` for each top that has no entry yet. An entry
    /// that is not that link is not ours to replace: logged once, left alone.
    fn link_tops(&self, state: &mut State, tops: &BTreeSet<&str>) {
        let mut changed = false;
        for top in tops {
            let link = self.dir.join(top);
            let target = Path::new(DATA).join(top);
            match fs::read_link(&link) {
                Ok(t) if t == target => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match symlink(&target, &link) {
                    Ok(()) => changed = true,
                    Err(e) => tracing::error!(
                        "failed to create the link {}: {e}; the object is published under ..data/{top} only",
                        link.display()
                    ),
                },
                _ => note(
                    state,
                    OsStr::new(top),
                    "a top-level name taken by an entry that is not our link; left alone (the object is under ..data/)",
                ),
            }
        }
        if changed {
            if let Err(e) = sync_dir(&self.dir) {
                tracing::warn!("{e}");
            }
        }
    }

    /// Remove our top-level links (`<name> -> ..data/<name>`, owned by our uid) whose name is not
    /// in `tops`. Anything else is left alone. Failures are logged: the new set is published.
    fn unlink_stale_tops(&self, tops: &BTreeSet<&str>) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || tops.contains(name) {
                continue;
            }
            let path = entry.path();
            let ours = fs::symlink_metadata(&path).is_ok_and(|m| is_link_of(&m, self.uid));
            if ours && fs::read_link(&path).is_ok_and(|t| t == Path::new(DATA).join(name)) {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!("failed to remove the stale link {}: {e}", path.display());
                }
            }
        }
    }
}

fn is_link_of(meta: &Metadata, uid: u32) -> bool {
    meta.file_type().is_symlink() && meta.uid() == uid
}

/// Log a foreign entry (or one we cannot clean) once per name.
fn note(state: &mut State, name: &OsStr, what: &str) {
    if state.noted.insert(name.to_os_string()) {
        tracing::warn!(entry = %name.to_string_lossy(), "output.dir: {what}");
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

/// `..data_tmp` or `..data_tmp.<suffix>` (and the older `..link_tmp`): a temporary link.
fn is_data_tmp_name(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b == b"..link_tmp" || b.strip_prefix(DATA_TMP.as_bytes()).is_some_and(|rest| rest.is_empty() || rest[0] == b'.')
}

/// Exactly `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn`: the snapshot-dir form, one path component.
fn is_stamp_name(name: &OsStr) -> bool {
    const FORM: &[u8] = b"..dddd_dd_dd_dd_dd_dd.ddddddddd";
    let b = name.as_encoded_bytes();
    b.len() == FORM.len() && b.iter().zip(FORM).all(|(c, f)| if *f == b'd' { c.is_ascii_digit() } else { c == f })
}

/// Create the new snapshot dir `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` (UTC), with a stamp above
/// `last_stamp` and not taken on disk; returned opened (see `made_dir`).
fn create_snapshot_dir(
    dir: &Path,
    last_stamp: &mut u128,
    mode: u32,
    uid: u32,
) -> Result<(OsString, PathBuf, File), PublishError> {
    let parent = File::open(dir).map_err(|e| PublishError::new("open directory", dir, e))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut stamp = now.max(*last_stamp + 1);
    loop {
        let name = stamp_name(stamp);
        let path = dir.join(&name);
        match made_dir(&parent, &name, &path, mode, uid) {
            Ok(root) => {
                *last_stamp = stamp;
                return Ok((name.into(), path, root));
            }
            Err(e) if e.source.kind() == io::ErrorKind::AlreadyExists => stamp += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Make `name` below the open dir `parent` and open it without following a link; check it is
/// a directory of `uid` and set its mode through the descriptor. Everything later (entries
/// below it, the fsync) goes through that descriptor, never through the path again: a
/// neighbour who swaps the path for a link in between gains nothing (`path` is for messages).
fn made_dir(parent: &File, name: &str, path: &Path, mode: u32, uid: u32) -> Result<File, PublishError> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(DIR_MODE))
        .map_err(|e| PublishError::new("create directory", path, e.into()))?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = File::from(
        rustix::fs::openat(parent, name, flags, Mode::empty())
            .map_err(|e| PublishError::new("open directory", path, e.into()))?,
    );
    let meta = dir.metadata().map_err(|e| PublishError::new("inspect directory", path, e))?;
    if !meta.is_dir() || meta.uid() != uid {
        let e = io::Error::new(io::ErrorKind::PermissionDenied, "replaced by an entry that is not ours");
        return Err(PublishError::new("open directory", path, e));
    }
    dir.set_permissions(Permissions::from_mode(mode)).map_err(|e| PublishError::new("set the mode of", path, e))?;
    Ok(dir)
}

/// `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` for a UTC time in nanoseconds since the epoch.
fn stamp_name(nanos: u128) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let frac = nanos % 1_000_000_000;
    let (y, m, d, hh, mm, ss) = sidecar_core::utc::parts(secs);
    format!("..{y:04}_{m:02}_{d:02}_{hh:02}_{mm:02}_{ss:02}.{frac:09}")
}

/// Write every entry of `snap` below the open snapshot dir `root_dir` (at `root`, named in
/// messages), every directory and file made relative to its parent's descriptor, then fsync
/// the directories, deepest first.
fn write_tree(
    root_dir: &File,
    root: &Path,
    snap: &Snapshot,
    file_mode: u32,
    dir_mode: u32,
    uid: u32,
) -> Result<(), PublishError> {
    let mut dirs: BTreeMap<PathBuf, File> = BTreeMap::new();
    for (path, entry) in snap.iter() {
        let segments: Vec<&str> = path.segments().collect();
        let Some((file_name, parents)) = segments.split_last() else { continue };
        let mut rel = PathBuf::new();
        for segment in parents {
            let above = rel.clone();
            rel.push(segment);
            if !dirs.contains_key(&rel) {
                let parent = if above.as_os_str().is_empty() { root_dir } else { &dirs[&above] };
                let made = made_dir(parent, segment, &root.join(&rel), dir_mode, uid)?;
                dirs.insert(rel.clone(), made);
            }
        }
        let parent = if rel.as_os_str().is_empty() { root_dir } else { &dirs[&rel] };
        write_file(parent, file_name, &root.join(path.as_str()), entry.value.expose(), file_mode)?;
    }
    // Reverse path order puts every directory before its parent.
    for (rel, dir) in dirs.iter().rev() {
        dir.sync_all().map_err(|e| PublishError::new("fsync directory", root.join(rel), e))?;
    }
    root_dir.sync_all().map_err(|e| PublishError::new("fsync directory", root, e))
}

/// Create `name` below the open dir `parent` (never following a link, failing on anything
/// there) with its final mode (never wider on the way: the umask can only narrow the create
/// mode, and the fchmod then sets exactly `mode`), write it, fsync it.
fn write_file(parent: &File, name: &str, path: &Path, bytes: &[u8], mode: u32) -> Result<(), PublishError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut file = File::from(
        rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(mode))
            .map_err(|e| PublishError::new("create file", path, e.into()))?,
    );
    file.set_permissions(Permissions::from_mode(mode)).map_err(|e| PublishError::new("set the mode of", path, e))?;
    file.write_all(bytes).map_err(|e| PublishError::new("write", path, e))?;
    file.sync_all().map_err(|e| PublishError::new("fsync", path, e))
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

/// Point `..data` at `name` in one rename (from a link of a name unique to this publish), and
/// make the rename durable.
fn swap_data(dir: &Path, name: &OsStr) -> Result<(), PublishError> {
    let tmp = loop {
        let tmp = dir.join(format!("{DATA_TMP}.{}.{:08x}", std::process::id(), fastrand::u32(..)));
        match symlink(name, &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(PublishError::new("create symlink", &tmp, e)),
        }
    };
    let data = dir.join(DATA);
    if let Err(e) = fs::rename(&tmp, &data) {
        let _ = fs::remove_file(&tmp);
        return Err(PublishError::new("swap", &data, e));
    }
    // The swap is done (readers see the new set): an fsync failure now is logged, not a failed
    // publish, so that the log, HTTP and the files agree.
    if let Err(e) = sync_dir(dir) {
        tracing::warn!("{e}; the new snapshot is published but its swap may not survive a crash");
    }
    Ok(())
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

    /// The snapshot dir `..data` points to, read from the directory.
    fn current(dir: &Path) -> Option<PathBuf> {
        fs::read_link(dir.join(DATA)).ok().map(|name| dir.join(name))
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn dotdot_dirs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| is_stamp_name(OsStr::new(n)))
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

        let dir = tmp.path().join("secrets");
        let dir = dir.as_path();
        let data = fs::read_link(dir.join("..data")).unwrap();
        let data_name = data.to_str().unwrap();
        assert!(data.is_relative());
        assert_eq!(data_name.len(), "..2026_11_23_07_00_00.123456789".len(), "{data_name}");
        assert!(is_stamp_name(OsStr::new(data_name)));
        assert_eq!(current(dir).unwrap(), dir.join(data_name));
        assert_eq!(fs::read_link(dir.join("db")).unwrap(), Path::new("..data/db"));
        assert_eq!(fs::read_link(dir.join("api-key")).unwrap(), Path::new("..data/api-key"));
        assert_eq!(fs::read(dir.join("db/password")).unwrap(), b"s3cret");
        assert_eq!(fs::read(dir.join(data_name).join("db/user")).unwrap(), b"app");
        assert_eq!(mode_of(&dir.join(data_name).join("db/password")), 0o440);
        assert_eq!(mode_of(&dir.join(data_name).join("api-key")), 0o440);
        assert_eq!(mode_of(&dir.join(data_name).join("db")), 0o755);
        assert_eq!(mode_of(&dir.join(data_name)), 0o755);
        assert_eq!(
            fs::read_dir(dir).unwrap().filter(|e| is_data_tmp_name(&e.as_ref().unwrap().file_name())).count(),
            0
        );
    }

    #[test]
    fn file_mode_is_exact_even_where_the_umask_would_narrow_it() {
        let tmp = tempfile::tempdir().unwrap();
        let out = FileOutput::new(tmp.path().to_path_buf(), 0o666);
        out.publish(&snapshot(&[("a", b"x")])).unwrap();
        assert_eq!(mode_of(&current(tmp.path()).unwrap().join("a")), 0o666);
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
        let first = current(tmp.path()).unwrap();
        out.publish(&snapshot(&[("a", b"two")])).unwrap();
        let second = current(tmp.path()).unwrap();
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
        let (a, _, _) =
            create_snapshot_dir(tmp.path(), &mut last, DIR_MODE, rustix::process::geteuid().as_raw()).unwrap();
        let (b, _, _) =
            create_snapshot_dir(tmp.path(), &mut last, DIR_MODE, rustix::process::geteuid().as_raw()).unwrap();
        assert_ne!(a, b);
        // A stamp taken on disk (another writer, a restart) is skipped too.
        let mut behind = YEAR_2100;
        let (c, _, _) =
            create_snapshot_dir(tmp.path(), &mut behind, DIR_MODE, rustix::process::geteuid().as_raw()).unwrap();
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
    fn foreign_entries_at_top_level_names_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(".sidecar-token"), b"tok").unwrap();
        fs::write(dir.join("notes.txt"), b"mine").unwrap();
        symlink("/etc/hostname", dir.join("elsewhere")).unwrap();
        fs::write(dir.join("a"), b"the app's own").unwrap();
        fs::create_dir(dir.join("db")).unwrap();
        fs::write(dir.join("db/keep"), b"mine").unwrap();
        let out = FileOutput::new(dir.to_path_buf(), 0o440);
        out.publish(&snapshot(&[("a", b"fresh"), ("db/password", b"x"), ("b", b"new")])).unwrap();
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"the app's own");
        assert_eq!(fs::read(dir.join("..data/a")).unwrap(), b"fresh");
        assert_eq!(fs::read(dir.join("db/keep")).unwrap(), b"mine");
        assert_eq!(fs::read(dir.join("..data/db/password")).unwrap(), b"x");
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"new");
        assert_eq!(fs::read(dir.join(".sidecar-token")).unwrap(), b"tok");
        assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"mine");
        assert_eq!(fs::read_link(dir.join("elsewhere")).unwrap(), Path::new("/etc/hostname"));
        // And the next publish too: nothing foreign ever fails one.
        out.publish(&snapshot(&[("a", b"fresher"), ("db/password", b"y")])).unwrap();
        assert_eq!(fs::read(dir.join("..data/a")).unwrap(), b"fresher");
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"the app's own");
        assert!(fs::symlink_metadata(dir.join("b")).is_err(), "our stale link is removed");
    }

    #[test]
    fn a_planted_data_link_never_makes_a_publish_remove_what_it_names() {
        for planted in ["..0/../../victim", "..0/..", "..0", "../victim"] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("out");
            let victim = tmp.path().join("victim");
            fs::create_dir_all(victim.join("sub")).unwrap();
            fs::write(victim.join("sub/f"), b"keep").unwrap();
            let out = FileOutput::new(dir.clone(), 0o440);
            out.prepare().unwrap();
            out.publish(&snapshot(&[("a", b"1")])).unwrap();
            let first = current(&dir).unwrap();
            fs::create_dir(dir.join("..0")).unwrap();
            fs::write(dir.join("notes"), b"mine").unwrap();
            symlink(planted, dir.join("..planted")).unwrap();
            fs::rename(dir.join("..planted"), dir.join("..data")).unwrap();

            out.publish(&snapshot(&[("a", b"2")])).unwrap();
            assert_eq!(fs::read(victim.join("sub/f")).unwrap(), b"keep", "{planted}");
            assert!(dir.join("..0").is_dir(), "{planted}");
            assert_eq!(fs::read(dir.join("notes")).unwrap(), b"mine", "{planted}");
            assert_eq!(fs::read(dir.join("a")).unwrap(), b"2", "{planted}");
            assert!(!first.exists(), "{planted}: the snapshot we swapped in is removed");
            // A restart over the planted link does not trust it either.
            symlink(planted, dir.join("..planted")).unwrap();
            fs::rename(dir.join("..planted"), dir.join("..data")).unwrap();
            let next = FileOutput::new(dir.clone(), 0o440);
            next.prepare().unwrap();
            next.publish(&snapshot(&[("a", b"3")])).unwrap();
            assert_eq!(fs::read(victim.join("sub/f")).unwrap(), b"keep", "{planted}");
            assert_eq!(fs::read(dir.join("a")).unwrap(), b"3", "{planted}");
        }
    }

    #[test]
    fn prepare_cleans_leftovers_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let out = FileOutput::new(dir.clone(), 0o440);
        out.prepare().unwrap();
        out.publish(&snapshot(&[("a", b"1")])).unwrap();
        let current = current(&dir).unwrap();
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
        assert_eq!(super::tests::current(&dir).unwrap(), current);
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
        let published = current(&dir).unwrap();
        fs::remove_file(dir.join("a")).unwrap(); // a top-level link lost meanwhile

        // The next process: the same values keep the same snapshot dir (no ..data swap).
        let second = FileOutput::new(dir.clone(), 0o440);
        second.prepare().unwrap();
        second.publish(&snap).unwrap();
        assert_eq!(current(&dir).unwrap(), published);
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"1", "the lost link is restored");
        // Adoption is for the first publish only: later ones always write.
        second.publish(&snap).unwrap();
        assert_ne!(current(&dir).unwrap(), published);

        // A different value, a different mode or an extra file: a real publish.
        for (mode, objects) in [
            (0o440, vec![("a", &b"2"[..]), ("db/password", &b"pw"[..])]),
            (0o400, vec![("a", &b"1"[..]), ("db/password", &b"pw"[..])]),
            (0o440, vec![("a", &b"1"[..])]),
        ] {
            let before = FileOutput::new(dir.clone(), 0o440);
            before.prepare().unwrap();
            before.publish(&snap).unwrap();
            let was = current(&dir).unwrap();
            let next = FileOutput::new(dir.clone(), mode);
            next.prepare().unwrap();
            next.publish(&snapshot(&objects)).unwrap();
            assert_ne!(current(&dir).unwrap(), was, "mode {mode:o}, {} objects", objects.len());
            assert_eq!(dotdot_dirs(&dir).len(), 1);
        }
    }

    #[test]
    fn prepare_creates_a_missing_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let out = FileOutput::new(tmp.path().join("a/b"), 0o440);
        out.prepare().unwrap();
        assert!(tmp.path().join("a/b").is_dir());
        assert!(current(&tmp.path().join("a/b")).is_none());
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
