//! The serde schema of SPEC.md as written by users: every key, `deny_unknown_fields`.
