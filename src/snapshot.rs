//! The set of objects published together, and what changed against the last one.
//!
//! A `Snapshot` maps each output path to the entry some source provided. `Snapshot::apply`
//! folds one source's poll result into the next snapshot, following the rules that keep the
//! published set safe: a failed fetch never removes a value, a failed poll changes nothing,
//! and a path (or a file/directory clash) already held stays with its holder. Callers share a
//! snapshot as `Arc<Snapshot>`; entries are cheap to clone (values are shared bytes).

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use crate::source::{Polled, SourceError};
use sidecar_core::relpath::RelPath;
use sidecar_core::secret::SecretValue;

/// One published object.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: SecretValue,
    pub version: String,
    pub updated: Option<SystemTime>,
    /// The id of the source that provides it.
    pub source: String,
    pub required: bool,
}

/// Everything published at one moment, by path.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    entries: BTreeMap<RelPath, Entry>,
}

/// What applying one poll result gave: the next snapshot and how it differs.
#[derive(Debug)]
pub struct Applied {
    pub snapshot: Snapshot,
    /// Added, updated and removed paths of the polled source, in path order.
    pub changes: Vec<Change>,
    /// Paths whose fetch failed this time and whose last value stays published.
    pub kept: Vec<Kept>,
    /// Paths the polled source returned but may not have.
    pub conflicts: Vec<Conflict>,
}

impl Applied {
    /// True when the next snapshot differs from the previous one (something to publish).
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// A change of one path, by version: never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added {
        path: RelPath,
        version: String,
    },
    /// A different version, or the same version with different bytes.
    Updated {
        path: RelPath,
        old_version: String,
        new_version: String,
    },
    Removed {
        path: RelPath,
        version: String,
    },
}

impl Change {
    pub fn path(&self) -> &RelPath {
        match self {
            Change::Added { path, .. } | Change::Updated { path, .. } | Change::Removed { path, .. } => path,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { path, version } => write!(f, "added {path} (version {version})"),
            Change::Updated { path, old_version, new_version } => {
                write!(f, "updated {path} (version {old_version} -> {new_version})")
            }
            Change::Removed { path, version } => write!(f, "removed {path} (version {version})"),
        }
    }
}

/// A path whose fetch failed; its last published value stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub path: RelPath,
    /// The Azure name (secret name, key).
    pub name: String,
    /// Why the fetch failed, without any value.
    pub reason: String,
}

/// A path the polled source returned that clashes with one already held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The rejected path.
    pub path: RelPath,
    /// The path that holds it off: the same path, a parent file or a child inside it.
    pub held: RelPath,
    /// The id of the source that holds `held`.
    pub holder: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path == self.held {
            write!(f, "path {} is already provided by {}", self.path, self.holder)
        } else {
            write!(
                f,
                "path {} clashes with {} provided by {} (a file cannot also be a directory)",
                self.path, self.held, self.holder
            )
        }
    }
}

impl Snapshot {
    pub fn new() -> Self {
        Snapshot::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Entries in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&RelPath, &Entry)> {
        self.entries.iter()
    }

    /// This snapshot without the entries of sources not in `sources` (a reload removed them).
    /// Returns the snapshot and whether anything was dropped.
    pub fn retain_sources(&self, sources: &[String]) -> (Snapshot, bool) {
        let entries: BTreeMap<RelPath, Entry> = self
            .entries
            .iter()
            .filter(|(_, e)| sources.contains(&e.source))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        let dropped = entries.len() != self.entries.len();
        (Snapshot { entries }, dropped)
    }

    /// The paths of `required` that are not published.
    pub fn missing(&self, required: &[RelPath]) -> Vec<RelPath> {
        required.iter().filter(|p| !self.entries.contains_key(*p)).cloned().collect()
    }

    /// The next snapshot after `source_id` returned `result`.
    ///
    /// On `Ok`, the source's entries become the objects it returned, plus the previous entry
    /// of each failure it had published before; its other entries are removed. On `Err`,
    /// nothing changes. A returned path that another entry holds (the same path, or one being
    /// a directory of the other) is rejected and reported; paths held before win over new
    /// ones, so a newcomer never displaces a published value.
    pub fn apply(&self, source_id: &str, result: &Result<Polled, SourceError>) -> Applied {
        let polled = match result {
            Ok(polled) => polled,
            Err(_) => {
                return Applied { snapshot: self.clone(), changes: Vec::new(), kept: Vec::new(), conflicts: Vec::new() }
            }
        };
        let (mut next, previous): (BTreeMap<_, _>, BTreeMap<_, _>) =
            self.entries.iter().map(|(p, e)| (p.clone(), e.clone())).partition(|(_, e)| e.source != source_id);

        let (candidates, kept) = candidates(source_id, polled, &previous);
        let mut conflicts = Vec::new();
        // Paths held before go first, so within a source too an old path is never displaced.
        let (old, new): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|(p, _)| previous.contains_key(p));
        for (path, entry) in old.into_iter().chain(new) {
            match clash(&next, &path) {
                Some(held) => {
                    let holder = next[&held].source.clone();
                    conflicts.push(Conflict { path, held, holder });
                }
                None => {
                    next.insert(path, entry);
                }
            }
        }
        let kept = kept.into_iter().filter(|k| next.get(&k.path).is_some_and(|e| e.source == source_id)).collect();
        let changes = diff(&previous, &next, source_id);
        Applied { snapshot: Snapshot { entries: next }, changes, kept, conflicts }
    }
}

/// The entries `source_id` asks for: its objects (the first of duplicate paths), and the
/// previous entry of each failure it had published and did not return this time.
fn candidates(
    source_id: &str,
    polled: &Polled,
    previous: &BTreeMap<RelPath, Entry>,
) -> (Vec<(RelPath, Entry)>, Vec<Kept>) {
    let mut wanted: BTreeMap<RelPath, Entry> = BTreeMap::new();
    for o in &polled.objects {
        wanted.entry(o.path.clone()).or_insert_with(|| Entry {
            value: o.value.clone(),
            version: o.version.clone(),
            updated: o.updated,
            source: source_id.to_string(),
            required: o.required,
        });
    }
    let mut kept = Vec::new();
    for f in &polled.failures {
        if wanted.contains_key(&f.path) {
            continue;
        }
        if let Some(prev) = previous.get(&f.path) {
            wanted.insert(f.path.clone(), prev.clone());
            kept.push(Kept { path: f.path.clone(), name: f.name.clone(), reason: f.reason.clone() });
        }
    }
    (wanted.into_iter().collect(), kept)
}

/// The path in `entries` that `path` clashes with: itself, a parent used as a file, or an
/// entry below it (`path` would have to be a directory).
fn clash(entries: &BTreeMap<RelPath, Entry>, path: &RelPath) -> Option<RelPath> {
    if entries.contains_key(path) {
        return Some(path.clone());
    }
    let segments: Vec<&str> = path.segments().collect();
    for n in 1..segments.len() {
        if let Ok(parent) = RelPath::parse(&segments[..n].join("/")) {
            if entries.contains_key(&parent) {
                return Some(parent);
            }
        }
    }
    // Every path that starts with `path` sorts in one run right after it.
    entries
        .range(path.clone()..)
        .take_while(|(p, _)| p.as_str().starts_with(path.as_str()))
        .find(|(p, _)| path.is_dir_prefix_of(p))
        .map(|(p, _)| p.clone())
}

/// The changes of `source_id`'s entries from `previous` to `next`.
fn diff(previous: &BTreeMap<RelPath, Entry>, next: &BTreeMap<RelPath, Entry>, source_id: &str) -> Vec<Change> {
    let mut changes = Vec::new();
    for (path, old) in previous {
        match next.get(path) {
            Some(new) if new.source == source_id => {
                if new.version != old.version || new.value != old.value {
                    changes.push(Change::Updated {
                        path: path.clone(),
                        old_version: old.version.clone(),
                        new_version: new.version.clone(),
                    });
                }
            }
            _ => changes.push(Change::Removed { path: path.clone(), version: old.version.clone() }),
        }
    }
    for (path, new) in next {
        if new.source == source_id && !previous.contains_key(path) {
            changes.push(Change::Added { path: path.clone(), version: new.version.clone() });
        }
    }
    changes.sort_by(|a, b| a.path().cmp(b.path()));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Failure, Object};

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    fn obj(path: &str, version: &str, value: &str) -> Object {
        Object {
            path: p(path),
            value: SecretValue::from(value.to_string()),
            version: version.to_string(),
            updated: None,
            required: false,
        }
    }

    fn fail(path: &str, reason: &str) -> Failure {
        Failure { path: p(path), name: path.replace('/', "-"), required: true, reason: reason.to_string() }
    }

    fn ok(objects: Vec<Object>, failures: Vec<Failure>) -> Result<Polled, SourceError> {
        Ok(Polled { objects, failures })
    }

    fn value_at<'a>(s: &'a Snapshot, path: &str) -> &'a [u8] {
        s.get(&p(path)).unwrap().value.expose()
    }

    #[test]
    fn first_poll_adds_every_object() {
        let a =
            Snapshot::new().apply("kv", &ok(vec![obj("db/password", "v1", "x"), obj("api-key", "k1", "y")], vec![]));
        assert_eq!(a.snapshot.len(), 2);
        assert_eq!(
            a.changes,
            vec![
                Change::Added { path: p("api-key"), version: "k1".into() },
                Change::Added { path: p("db/password"), version: "v1".into() },
            ]
        );
        assert_eq!(a.snapshot.get(&p("db/password")).unwrap().source, "kv");
        assert!(a.changed());
    }

    #[test]
    fn same_version_and_bytes_is_no_change() {
        let s = Snapshot::new().apply("kv", &ok(vec![obj("a", "v1", "x")], vec![])).snapshot;
        let a = s.apply("kv", &ok(vec![obj("a", "v1", "x")], vec![]));
        assert!(a.changes.is_empty());
        assert!(!a.changed());
    }

    #[test]
    fn new_version_or_new_bytes_is_an_update() {
        let s = Snapshot::new().apply("kv", &ok(vec![obj("a", "v1", "x"), obj("b", "v1", "x")], vec![])).snapshot;
        let a = s.apply("kv", &ok(vec![obj("a", "v2", "x"), obj("b", "v1", "changed")], vec![]));
        assert_eq!(
            a.changes,
            vec![
                Change::Updated { path: p("a"), old_version: "v1".into(), new_version: "v2".into() },
                Change::Updated { path: p("b"), old_version: "v1".into(), new_version: "v1".into() },
            ]
        );
        assert_eq!(value_at(&a.snapshot, "b"), b"changed");
    }

    #[test]
    fn failed_fetch_keeps_the_published_value() {
        let s = Snapshot::new().apply("kv", &ok(vec![obj("db/password", "v1", "old")], vec![])).snapshot;
        let a = s.apply("kv", &ok(vec![], vec![fail("db/password", "SecretDisabled (403)")]));
        assert_eq!(value_at(&a.snapshot, "db/password"), b"old");
        assert!(a.changes.is_empty());
        assert_eq!(
            a.kept,
            vec![Kept { path: p("db/password"), name: "db-password".into(), reason: "SecretDisabled (403)".into() }]
        );
    }

    #[test]
    fn failure_of_a_never_published_path_adds_nothing() {
        let a = Snapshot::new().apply("kv", &ok(vec![], vec![fail("a", "SecretNotFound (404)")]));
        assert!(a.snapshot.is_empty());
        assert!(a.kept.is_empty());
        assert!(a.changes.is_empty());
    }

    #[test]
    fn path_neither_returned_nor_failed_is_removed() {
        let s = Snapshot::new().apply("kv", &ok(vec![obj("a", "v1", "x"), obj("gone", "g1", "y")], vec![])).snapshot;
        let a = s.apply("kv", &ok(vec![obj("a", "v1", "x")], vec![]));
        assert!(a.snapshot.get(&p("gone")).is_none());
        assert_eq!(a.changes, vec![Change::Removed { path: p("gone"), version: "g1".into() }]);
    }

    #[test]
    fn failed_poll_changes_nothing() {
        let s = Snapshot::new().apply("kv", &ok(vec![obj("a", "v1", "x")], vec![])).snapshot;
        let a = s.apply("kv", &Err(SourceError::Invalid("list failed".into())));
        assert_eq!(a.snapshot.len(), 1);
        assert_eq!(value_at(&a.snapshot, "a"), b"x");
        assert!(a.changes.is_empty() && a.kept.is_empty() && a.conflicts.is_empty());
    }

    #[test]
    fn other_sources_entries_are_untouched() {
        let s = Snapshot::new().apply("kv1", &ok(vec![obj("a", "v1", "x")], vec![])).snapshot;
        let s = s.apply("kv2", &ok(vec![obj("b", "v1", "y")], vec![])).snapshot;
        let a = s.apply("kv2", &ok(vec![], vec![]));
        assert_eq!(a.changes, vec![Change::Removed { path: p("b"), version: "v1".into() }]);
        assert_eq!(value_at(&a.snapshot, "a"), b"x");
        assert_eq!(a.snapshot.get(&p("a")).unwrap().source, "kv1");
    }

    #[test]
    fn path_held_by_another_source_is_rejected_for_the_newcomer() {
        let s = Snapshot::new().apply("kv1", &ok(vec![obj("a", "v1", "first")], vec![])).snapshot;
        let a = s.apply("kv2", &ok(vec![obj("a", "w1", "second"), obj("b", "w1", "z")], vec![]));
        assert_eq!(value_at(&a.snapshot, "a"), b"first");
        assert_eq!(a.conflicts, vec![Conflict { path: p("a"), held: p("a"), holder: "kv1".into() }]);
        assert_eq!(a.changes, vec![Change::Added { path: p("b"), version: "w1".into() }]);
    }

    #[test]
    fn file_and_directory_clash_is_rejected_both_ways() {
        let s =
            Snapshot::new().apply("kv1", &ok(vec![obj("db", "v1", "x"), obj("app/cfg", "v1", "y")], vec![])).snapshot;
        let a = s.apply("kv2", &ok(vec![obj("db/password", "w1", "z"), obj("app", "w1", "z")], vec![]));
        assert_eq!(a.snapshot.len(), 2);
        assert_eq!(
            a.conflicts,
            vec![
                Conflict { path: p("app"), held: p("app/cfg"), holder: "kv1".into() },
                Conflict { path: p("db/password"), held: p("db"), holder: "kv1".into() },
            ]
        );
        assert!(a.changes.is_empty());
        assert!(a.conflicts[1].to_string().contains("cannot also be a directory"));
    }

    #[test]
    fn similar_names_are_not_a_clash() {
        let s = Snapshot::new().apply("kv1", &ok(vec![obj("db", "v1", "x")], vec![])).snapshot;
        let a =
            s.apply("kv2", &ok(vec![obj("db-x/a", "w1", "z"), obj("db.x", "w1", "z"), obj("dbx", "w1", "z")], vec![]));
        assert!(a.conflicts.is_empty(), "{:?}", a.conflicts);
        assert_eq!(a.snapshot.len(), 4);
    }

    #[test]
    fn within_one_source_the_published_path_wins_a_clash() {
        let s = Snapshot::new().apply("kv", &ok(vec![obj("db/password", "v1", "x")], vec![])).snapshot;
        let a = s.apply("kv", &ok(vec![obj("db", "n1", "new"), obj("db/password", "v1", "x")], vec![]));
        assert_eq!(a.conflicts, vec![Conflict { path: p("db"), held: p("db/password"), holder: "kv".into() }]);
        assert!(a.snapshot.get(&p("db/password")).is_some());
        assert!(a.changes.is_empty());
    }

    #[test]
    fn rejected_path_is_picked_up_once_the_holder_releases_it() {
        let s = Snapshot::new().apply("kv1", &ok(vec![obj("a", "v1", "first")], vec![])).snapshot;
        let s = s.apply("kv2", &ok(vec![obj("a", "w1", "second")], vec![])).snapshot;
        let s = s.apply("kv1", &ok(vec![], vec![])).snapshot;
        let a = s.apply("kv2", &ok(vec![obj("a", "w1", "second")], vec![]));
        assert_eq!(value_at(&a.snapshot, "a"), b"second");
        assert_eq!(a.changes, vec![Change::Added { path: p("a"), version: "w1".into() }]);
    }

    #[test]
    fn missing_lists_unpublished_required_paths() {
        let s = Snapshot::new().apply("kv", &ok(vec![obj("a", "v1", "x")], vec![])).snapshot;
        assert_eq!(s.missing(&[p("a"), p("b"), p("c/d")]), vec![p("b"), p("c/d")]);
        assert!(s.missing(&[p("a")]).is_empty());
    }

    #[test]
    fn changes_never_show_values() {
        let s = Snapshot::new().apply("kv", &ok(vec![obj("a", "v1", "canary-old")], vec![])).snapshot;
        let a = s.apply("kv", &ok(vec![obj("a", "v2", "canary-new")], vec![]));
        let text = format!("{:?} {} {:?}", a, a.changes[0], a.snapshot);
        assert!(!text.contains("canary"), "{text}");
    }
}
