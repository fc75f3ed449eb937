//! Outputs: hand a `Snapshot` over to the app. They know files or HTTP, nothing about Azure.

pub mod files;
