//! `RelPath`: a validated relative path inside `output.dir`, also the HTTP name of an object.
//!
//! The spec allows `/`-separated segments of `[A-Za-z0-9._-]`, no empty segment, no segment
//! starting with a dot (which also rules out `.`, `..` and the AtomicWriter's own `..data`).
//! Everything that names an output location (config paths, Key Vault names with `all: true`,
//! App Configuration keys with `format: files`) goes through `RelPath::parse`, so nothing can be
//! written outside `output.dir` or over the writer's own entries.

use std::fmt;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelPathError {
    #[error("path is empty")]
    Empty,
    #[error("path must be relative (no leading '/')")]
    Absolute,
    #[error("path has an empty segment ('//' or a trailing '/')")]
    EmptySegment,
    #[error("path segment {0:?} starts with '.' (no '.', '..' or hidden names)")]
    DotSegment(String),
    #[error("path segment {0:?} has a character outside [A-Za-z0-9._-]")]
    BadCharacter(String),
    #[error("path is longer than 1024 bytes")]
    TooLong,
    #[error("path segment {0:?}... is longer than 255 bytes (the longest file name Linux allows)")]
    SegmentTooLong(String),
}

/// The longest file name (one path segment) Linux file systems take (`NAME_MAX`).
pub const MAX_SEGMENT: usize = 255;

impl RelPath {
    pub fn parse(s: &str) -> Result<Self, RelPathError> {
        if s.is_empty() {
            return Err(RelPathError::Empty);
        }
        if s.len() > 1024 {
            return Err(RelPathError::TooLong);
        }
        if s.starts_with('/') {
            return Err(RelPathError::Absolute);
        }
        for seg in s.split('/') {
            if seg.is_empty() {
                return Err(RelPathError::EmptySegment);
            }
            if seg.len() > MAX_SEGMENT {
                let head: String = seg.chars().take(32).collect();
                return Err(RelPathError::SegmentTooLong(head.escape_debug().to_string()));
            }
            if seg.starts_with('.') {
                return Err(RelPathError::DotSegment(seg.escape_debug().to_string()));
            }
            if !seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
                return Err(RelPathError::BadCharacter(seg.escape_debug().to_string()));
            }
        }
        Ok(RelPath(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment: the name of the top-level link in `output.dir`.
    pub fn top(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Join a further relative path below this one (`format: files` puts keys under `path`).
    pub fn join(&self, rest: &RelPath) -> RelPath {
        RelPath(format!("{}/{}", self.0, rest.0))
    }

    /// True when `self` is a strict directory prefix of `other` (`db` of `db/password`).
    pub fn is_dir_prefix_of(&self, other: &RelPath) -> bool {
        other.0.len() > self.0.len() && other.0.starts_with(&self.0) && other.0.as_bytes()[self.0.len()] == b'/'
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl serde::Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spec_form() {
        for ok in ["db/password", "api-key", "a.b_c-d/E9", "x/y/z.json"] {
            assert_eq!(RelPath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn a_segment_is_at_most_255_bytes() {
        let at_limit = format!("a/{}", "b".repeat(255));
        assert!(RelPath::parse(&at_limit).is_ok());
        let over = format!("a/{}.txt", "b".repeat(252));
        assert!(matches!(RelPath::parse(&over), Err(RelPathError::SegmentTooLong(_))));
        assert!(RelPath::parse(&over).unwrap_err().to_string().contains("longer than 255 bytes"));
    }

    #[test]
    fn rejects_everything_that_could_escape_or_collide() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            ".hidden",
            "..data",
            "a/..2026",
            "a b",
            "a\\b",
            "a\nb",
            "ü",
            "a:b",
            "%2e%2e",
        ] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dir_prefix() {
        let db = RelPath::parse("db").unwrap();
        assert!(db.is_dir_prefix_of(&RelPath::parse("db/password").unwrap()));
        assert!(!db.is_dir_prefix_of(&RelPath::parse("dbx/password").unwrap()));
        assert!(!db.is_dir_prefix_of(&db));
        assert_eq!(RelPath::parse("db/password").unwrap().top(), "db");
    }
}
