//! sidecar-core: what the sidecar and its emulator both need and neither owns.
//!
//! Pure code, no I/O and no runtime (kube-core's role): secret values that redact themselves
//! ([`secret`]), the relative-path rule of published names ([`relpath`]), certificates and keys
//! ([`pki`]) and UTC formatting ([`utc`]). The product and the emulator depend on this crate;
//! it depends on neither, so the emulator never borrows product code.

pub mod pki;
pub mod relpath;
pub mod secret;
pub mod utc;
