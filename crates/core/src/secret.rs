//! The types that hold secret material: values fetched from Azure, access tokens, assertions.
//!
//! Their `Debug` and `Display` print `<redacted>` and their memory is zeroed when dropped, so a
//! stray `{:?}` in a log line or an error message can never leak what they hold. Getting at
//! the bytes takes an explicit `expose()` call, which is easy to grep for.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// Secret bytes (a Key Vault value, a resolved reference, a rendered settings file).
///
/// Cheap to clone (the bytes are shared), zeroed when the last clone drops. Values are bytes,
/// not `String`, because Key Vault values and rendered files are published byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<Zeroizing<Vec<u8>>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Arc::new(Zeroizing::new(bytes)))
    }

    /// The secret bytes. Call only where they are handed over (a file, an HTTP body).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        SecretValue::new(s.into_bytes())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted>, {} bytes)", self.len())
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret string: an access token, a federated assertion, a client secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Arc<Zeroizing<String>>);

impl SecretString {
    pub fn new(s: String) -> Self {
        SecretString(Arc::new(Zeroizing::new(s)))
    }

    /// The secret text. Call only where it is sent (an `Authorization` header, a token form).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let v = SecretValue::from("hunter2-canary".to_string());
        let s = SecretString::new("tok-canary".into());
        for text in [format!("{v:?}"), format!("{v}"), format!("{s:?}"), format!("{s}")] {
            assert!(!text.contains("canary"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
        assert_eq!(v.expose(), b"hunter2-canary");
        assert_eq!(s.expose(), "tok-canary");
    }
}
