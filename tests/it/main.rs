//! The integration tests: one binary (as ripgrep's `tests/tests.rs` and linkerd's integration
//! crate), each module a behaviour of the real `azure-secrets-sidecar` binary against the
//! emulator (`azure_emulator`, a dev-dependency) over real TLS, real files and real signals.

mod support;

/// App Configuration: selects, labels, references, feature flags, formats.
mod appconfig;
/// The arm64 binary under qemu-aarch64-static (SKIPPED without it).
mod arm64;
/// Bad config, hostile names and sizes: a clear error, nothing published lost.
mod bad_input;
/// Key Vault certificates and keys: PEM, PFX, keys.
mod certificates;
/// Key Vault challenges with Azure-shaped vault names: Managed HSM, foreign resources, other tenants, CAE.
mod challenges;
/// The command line: usage, exit codes, `check`, the example configs.
mod cli;
/// Clouds other than the public one.
mod clouds;
/// Readers never see a torn or mixed set; restarts adopt what is on disk.
mod consistency;
/// The FROM-scratch images in a pod-like network (SKIPPED without Docker).
mod container;
/// `demo` publishes Key Vault and App Configuration, reloads its edited config, stops cleanly.
#[cfg(feature = "demo")]
mod demo;
/// The README and docs/: examples pass `check`, links resolve, the commands are the binary's.
mod docs;
/// Azure failing: storms, Retry-After, outages, recovery.
mod faults;
/// No secret, token or credential in any log line, at trace level.
mod hygiene;
/// Every identity mode against the emulator.
mod identities;
/// `inject`: every workload kind, idempotence, refusals, schema-valid output.
mod inject;
/// Key Vault to files: the AtomicWriter layout, changes, `--once`.
mod keyvault_files;
/// Key Vault request counts: lists, GETs, pinned versions.
mod keyvault_requests;
/// `migrate csi`: the CSI driver's files byte for byte, reports, refusals, `--manifest`, the guide.
mod migrate;
/// k8s/monitoring: the alert rules' tests, and the real /metrics through promtool.
mod monitoring;
/// Config reloads: ConfigMap updates, SIGHUP, invalid edits.
mod reload;
/// The standard Azure variables read as Microsoft's SDKs read them.
mod sdk_environment;
/// Retries and request ids as Microsoft's SDKs send them.
mod sdk_retries;
/// The HTTP listener, health, metrics, probe and webhook.
mod serve_health;
/// SIGTERM and SIGINT: the 5 s bound, a second signal, no publish after the signal.
mod shutdown;
/// A hostile volume neighbour: planted entries are never followed, removed or replaced.
mod volume;
