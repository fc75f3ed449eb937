//! The set of objects published together, and what changed against the last one.
