//! The Kubernetes AtomicWriter layout: a `..<timestamp>` snapshot dir, `..data` swapped by
//! renaming a new symlink over it, top-level links into `..data`.
