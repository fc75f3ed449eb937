//! A local stand-in for Azure (IMDS, Entra ID token endpoint, Key Vault), over real TLS with a
//! CA generated per run, with fault injection and request counts. Backs `demo`, the tests and
//! the benchmarks.
