//! The emulator's own tests over the wire: one test binary, a module per area.

/// App Configuration stores: paging, filters, ETags, auth.
mod appconfig;
/// TLS with the run's CA, Entra and IMDS tokens, Key Vault reads, paging, faults, canned
/// responses, the control API and the request log.
mod wire;
