//! Layering: built-in defaults < config file (YAML/TOML/JSON by extension) < `SIDECAR_<SECTION>__<KEY>`
//! environment < command-line flags, merged with figment, then validated.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/azure-secrets-sidecar/config.yaml";

/// Where the config file comes from, for error messages and the reload watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Flag(PathBuf),
    Env(PathBuf),
    Default(PathBuf),
}

impl ConfigSource {
    /// `--config`, else `SIDECAR_CONFIG`, else the default path.
    pub fn resolve(flag: Option<PathBuf>, env: &[(String, String)]) -> ConfigSource {
        if let Some(p) = flag {
            return ConfigSource::Flag(p);
        }
        if let Some((_, v)) = env.iter().find(|(k, v)| k == "SIDECAR_CONFIG" && !v.is_empty()) {
            return ConfigSource::Env(PathBuf::from(v));
        }
        ConfigSource::Default(PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    pub fn path(&self) -> &Path {
        match self {
            ConfigSource::Flag(p) | ConfigSource::Env(p) | ConfigSource::Default(p) => p,
        }
    }
}

/// Values given on the command line, as dotted keys (`output.dir`), the highest layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub values: Vec<(String, String)>,
}

/// Load and validate. `env` is the process environment, passed in so tests never mutate it.
pub fn load(path: &Path, env: &[(String, String)], flags: &Overrides) -> Result<Config, ConfigError> {
    todo!("config helper: {path:?} {} {:?}", env.len(), flags)
}
