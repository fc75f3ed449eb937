//! `encoding:` of a secret: its value decoded before it is written, by the rules of the CSI
//! driver's `objectEncoding` (provider.go `getContentBytes`: Go's `base64.StdEncoding` and
//! `hex.DecodeString`), so that a migrated `SecretProviderClass` publishes the same bytes.
//! An undecodable value is a failure of that secret alone; the reason never shows the value.

use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::config::Encoding;
use sidecar_core::secret::SecretValue;

/// Go's `StdEncoding`: the standard alphabet, padding required, trailing bits not checked.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// The bytes to write for `value` under `encoding`, or why it cannot be decoded.
pub(super) fn decode(value: &SecretValue, encoding: Encoding) -> Result<SecretValue, String> {
    let raw = value.expose();
    match encoding {
        Encoding::Utf8 => Ok(value.clone()),
        Encoding::Base64 => {
            // Go's decoder skips carriage returns and newlines wherever they are.
            let text = Zeroizing::new(raw.iter().copied().filter(|b| !matches!(b, b'\r' | b'\n')).collect::<Vec<u8>>());
            // Into a zeroized buffer of its own: bytes decoded before a bad one are a secret's too.
            let mut out = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(text.len())]);
            let n = GO_STD.decode_slice(text.as_slice(), &mut out[..]).map_err(|e| match e {
                base64::DecodeSliceError::DecodeError(e) => {
                    format!("the value is not valid base64 (encoding: base64): {}", base64_problem(&e))
                }
                base64::DecodeSliceError::OutputSliceTooSmall => "the value did not decode (encoding: base64)".into(),
            })?;
            out.truncate(n);
            Ok(SecretValue::new(std::mem::take(&mut *out)))
        }
        Encoding::Hex => hex(raw).map(|mut bytes| SecretValue::new(std::mem::take(&mut *bytes))),
    }
}

/// What is wrong, by position only (never the offending byte: it is part of a secret).
fn base64_problem(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(at, _) => format!("a character outside the alphabet at offset {at}"),
        base64::DecodeError::InvalidLength(_) => "its length is not a multiple of 4".into(),
        base64::DecodeError::InvalidLastSymbol(at, _) => format!("an invalid last symbol at offset {at}"),
        base64::DecodeError::InvalidPadding => "missing or misplaced padding".into(),
    }
}

fn hex(raw: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    if raw.len() % 2 != 0 {
        return Err("the value is not valid hex (encoding: hex): an odd number of digits".into());
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let bad = |at: usize| format!("the value is not valid hex (encoding: hex): a non-hex character at offset {at}");
    // Zeroized also when a later digit fails: the bytes decoded so far are part of a secret.
    let mut out = Zeroizing::new(Vec::with_capacity(raw.len() / 2));
    for (i, pair) in raw.chunks(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            (None, _) => return Err(bad(i * 2)),
            (_, None) => return Err(bad(i * 2 + 1)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(value: &str, encoding: Encoding) -> Result<Vec<u8>, String> {
        decode(&SecretValue::new(value.as_bytes().to_vec()), encoding).map(|v| v.expose().to_vec())
    }

    #[test]
    fn values_decode_as_go_decodes_them() {
        assert_eq!(d("héllo", Encoding::Utf8).unwrap(), "héllo".as_bytes());
        assert_eq!(d("AAEC/w==", Encoding::Base64).unwrap(), [0, 1, 2, 255]);
        // Go's StdEncoding drops \r and \n anywhere, and does not check the unused trailing bits.
        assert_eq!(d("AA\r\nEC/w==\n", Encoding::Base64).unwrap(), [0, 1, 2, 255]);
        assert_eq!(d("AB==", Encoding::Base64).unwrap(), [0]);
        assert_eq!(d("00ff7Fa0", Encoding::Hex).unwrap(), [0, 255, 127, 160]);
        assert_eq!(d("", Encoding::Hex).unwrap(), b"");
    }

    #[test]
    fn undecodable_values_say_where_without_the_value() {
        let e = d("AAE", Encoding::Base64).unwrap_err();
        assert!(e.contains("base64"), "{e}");
        assert!(d("AAEC", Encoding::Base64).is_ok());
        // Padding is required, as by Go's StdEncoding; spaces are not skipped.
        assert!(d("AAECAw", Encoding::Base64).is_err());
        assert!(d("AA EC/w==", Encoding::Base64).is_err());
        let e = d("s3cr3tzz", Encoding::Hex).unwrap_err();
        assert!(e.contains("offset 0") && !e.contains("s3cr"), "{e}");
        assert!(d("abc", Encoding::Hex).unwrap_err().contains("odd"));
    }
}
