//! Key Vault secrets: named secrets (latest or pinned), or `all: true` with include/exclude
//! globs over the paged list, fetched with bounded concurrency.
