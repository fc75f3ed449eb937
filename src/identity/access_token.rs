//! A ready-made access token (local development): `ACCESS_TOKEN`, or a file re-read at each
//! request so that a developer can refresh it (`az account get-access-token > file`) without a
//! restart. Either holds a bare token (`--query accessToken -o tsv`) or the JSON the az CLI
//! prints (`accessToken`, `expires_on` in unix seconds). The expiry comes from `expires_on`,
//! else the JWT `exp` claim, else one hour is assumed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::{read_secret_file, AccessToken, BoxFuture, Credential, IdentityError, SecretSource};
use sidecar_core::secret::SecretString;

const MODE: &str = "access-token";
/// Assumed lifetime of an opaque (non-JWT) token.
const OPAQUE_LIFETIME: Duration = Duration::from_secs(3600);

pub struct AccessTokenCredential {
    source: SecretSource,
}

impl AccessTokenCredential {
    pub fn new(source: SecretSource) -> Self {
        AccessTokenCredential { source }
    }

    async fn load(&self) -> Result<AccessToken, IdentityError> {
        let (token, origin) = match &self.source {
            SecretSource::Env(t) => (t.clone(), "ACCESS_TOKEN".to_string()),
            SecretSource::File(path) => {
                (read_secret_file(MODE, "access token", path).await?, format!("file {}", path.display()))
            }
        };
        let (token, stated) = parse(token, &origin)?;
        let now = SystemTime::now();
        let expires_on = stated.or_else(|| jwt_expiry(&token)).unwrap_or(now + OPAQUE_LIFETIME);
        if expires_on <= now {
            let when = httpdate::fmt_http_date(expires_on);
            return Err(IdentityError::Local {
                mode: MODE,
                reason: format!("the access token from {origin} expired at {when}"),
            });
        }
        Ok(AccessToken { token, expires_on })
    }
}

impl Credential for AccessTokenCredential {
    fn kind(&self) -> &'static str {
        MODE
    }

    /// The token is used for every scope: it is the developer's job to supply one whose
    /// audience fits the configured sources.
    fn request_token<'a>(
        &'a self,
        _scope: &'a str,
        _cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        Box::pin(self.load())
    }
}

/// The token in `text` and the expiry it states: the JSON `az account get-access-token`
/// prints (`{"accessToken": ..., "expires_on": 1700000000, ...}`), or a bare token.
fn parse(text: SecretString, origin: &str) -> Result<(SecretString, Option<SystemTime>), IdentityError> {
    let trimmed = text.expose().trim();
    if !trimmed.starts_with('{') {
        return Ok((SecretString::new(trimmed.to_owned()), None));
    }
    #[derive(serde::Deserialize)]
    struct AzCli<'a> {
        /// Borrowed from the (zeroized) text: no copy of the token outlives this call.
        #[serde(rename = "accessToken", borrow)]
        access_token: Option<&'a str>,
        expires_on: Option<serde_json::Value>,
    }
    let local = |reason: String| IdentityError::Local { mode: MODE, reason };
    let parsed: AzCli = serde_json::from_str(trimmed)
        .map_err(|_| local(format!("the access token from {origin} starts with '{{' but is not valid JSON")))?;
    let Some(token) = parsed.access_token.filter(|t| !t.trim().is_empty()) else {
        return Err(local(format!(
            "the access token from {origin} is JSON without an accessToken (expected what `az account get-access-token` prints)"
        )));
    };
    let expires_on = parsed
        .expires_on
        .and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
        .filter(|e| e.is_finite() && *e > 0.0 && *e < 1e11)
        .map(|e| UNIX_EPOCH + Duration::from_secs_f64(e));
    Ok((SecretString::new(token.trim().to_owned()), expires_on))
}

/// The `exp` claim of a JWT (`header.payload.signature`, base64url), if the token is one.
fn jwt_expiry(token: &SecretString) -> Option<SystemTime> {
    let mut parts = token.expose().split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    let json = zeroize::Zeroizing::new(base64url_decode(payload)?);
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<serde_json::Value>,
    }
    let claims: Claims = serde_json::from_slice(&json).ok()?;
    let exp = claims.exp?.as_f64().filter(|e| e.is_finite() && *e > 0.0 && *e < 1e11)?;
    Some(UNIX_EPOCH + Duration::from_secs_f64(exp))
}

/// RFC 4648 §5 base64url, padding optional. `None` on any other character.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character (6 bits) cannot come from whole bytes.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn az_cli_json_gives_the_token_and_its_expiry_and_bare_tokens_pass_through() {
        let json = r#"{"accessToken": "eyJ0.eyJ1.c2ln", "expiresOn": "2026-12-01 23:00:00.000000",
            "expires_on": 1796166000, "subscription": "s", "tenant": "t", "tokenType": "Bearer"}"#;
        let (token, expiry) = parse(SecretString::new(json.into()), "file f").unwrap();
        assert_eq!(token.expose(), "eyJ0.eyJ1.c2ln");
        assert_eq!(expiry, Some(UNIX_EPOCH + Duration::from_secs(1_796_166_000)));
        let (token, expiry) = parse(SecretString::new(r#"{"accessToken":"t","expires_on":"17"}"#.into()), "f").unwrap();
        assert_eq!((token.expose(), expiry), ("t", Some(UNIX_EPOCH + Duration::from_secs(17))));
        let (token, expiry) = parse(SecretString::new("opaque-token".into()), "f").unwrap();
        assert_eq!((token.expose(), expiry), ("opaque-token", None));
        let e = parse(SecretString::new(r#"{"token":"secret-bits"}"#.into()), "file f").unwrap_err().to_string();
        assert!(e.contains("without an accessToken") && !e.contains("secret-bits"), "{e}");
        let e = parse(SecretString::new("{secret-bits".into()), "file f").unwrap_err().to_string();
        assert!(e.contains("not valid JSON") && !e.contains("secret-bits"), "{e}");
    }

    fn jwt(claims: &str) -> String {
        format!("{}.{}.c2ln", b64(br#"{"alg":"RS256","typ":"JWT"}"#), b64(claims.as_bytes()))
    }

    #[test]
    fn base64url_decodes_with_and_without_padding() {
        assert_eq!(base64url_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64url_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64url_decode("").unwrap(), b"");
        assert!(base64url_decode("a").is_none());
        assert!(base64url_decode("a+b/").is_none());
        for len in 0..20 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(base64url_decode(&b64(&data)).unwrap(), data);
        }
    }

    #[test]
    fn jwt_expiry_comes_from_the_exp_claim() {
        let t = SecretString::new(jwt(r#"{"aud":"https://vault.azure.net","exp":4102444800}"#));
        assert_eq!(jwt_expiry(&t), Some(UNIX_EPOCH + Duration::from_secs(4_102_444_800)));
        assert_eq!(jwt_expiry(&SecretString::new("opaque-token".into())), None);
        assert_eq!(jwt_expiry(&SecretString::new(jwt(r#"{"aud":"x"}"#))), None);
    }

    #[tokio::test]
    async fn env_token_is_used_with_its_jwt_expiry() {
        let token = jwt(r#"{"exp":4102444800}"#);
        let c = AccessTokenCredential::new(SecretSource::Env(SecretString::new(token.clone())));
        let t = c.request_token("https://vault.azure.net/.default", &CancellationToken::new()).await.unwrap();
        assert_eq!(t.token.expose(), token);
        assert_eq!(t.expires_on, UNIX_EPOCH + Duration::from_secs(4_102_444_800));
    }

    #[tokio::test]
    async fn opaque_token_is_assumed_to_last_an_hour() {
        let c = AccessTokenCredential::new(SecretSource::Env(SecretString::new("opaque".into())));
        let before = SystemTime::now();
        let t = c.request_token("s", &CancellationToken::new()).await.unwrap();
        let life = t.expires_on.duration_since(before).unwrap();
        assert!(life >= OPAQUE_LIFETIME && life < OPAQUE_LIFETIME + Duration::from_secs(60));
    }

    #[tokio::test]
    async fn token_file_is_reread_on_each_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let c = AccessTokenCredential::new(SecretSource::File(path.clone()));
        let cancel = CancellationToken::new();
        assert_eq!(c.request_token("s", &cancel).await.unwrap().token.expose(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(c.request_token("s", &cancel).await.unwrap().token.expose(), "second");
    }

    #[tokio::test]
    async fn expired_or_missing_tokens_are_local_errors_without_the_token() {
        let expired = jwt(r#"{"exp":1000}"#);
        let c = AccessTokenCredential::new(SecretSource::Env(SecretString::new(expired.clone())));
        let err = c.request_token("s", &CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, IdentityError::Local { .. }));
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(!err.to_string().contains(&expired));

        let c = AccessTokenCredential::new(SecretSource::File("/nonexistent/token".into()));
        let err = c.request_token("s", &CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/token"), "{err}");
    }
}
