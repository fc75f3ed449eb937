//! Wiring for each command: config -> identity -> sources -> outputs, handed to the runtime.
//!
//! Reads like a script (as linkerd2-proxy's `main` does): load and validate the config, set up
//! logging, build the pipeline, log what was built, start the signal thread, run until told to
//! stop, drain within the 5 s bound. Every failure comes back as an `AppError` whose exit code
//! `main` returns; nothing below here exits the process.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::azure::{AzureClient, HttpSettings, RetryPolicy};
use crate::cli::{self, Command, ProbeKind};
use crate::config::{self, Config, ConfigError, ConfigSource, SourceConfig};
use crate::identity::{self, AzureEnv, TokenCache};
use crate::metrics::Metrics;
use crate::runtime::supervise::{self, Built};
use crate::runtime::{block_on, signals, sync, RunError};
use crate::source::appconfig::AppConfigSource;
use crate::source::keyvault::KeyVaultSource;
use crate::source::Source;
use sidecar_core::relpath::RelPath;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}\n\n{usage}", usage = cli::USAGE)]
    Usage(#[from] cli::UsageError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Inject(#[from] crate::inject::InjectError),
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateError),
    #[error("{0}")]
    Runtime(String),
}

impl From<RunError> for AppError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Config(e) => AppError::Config(e),
            RunError::Failed(msg) => AppError::Runtime(msg),
        }
    }
}

impl AppError {
    /// The spec's exit codes: 1 runtime failure, 2 bad usage or invalid configuration.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) | AppError::Config(_) => 2,
            AppError::Inject(_) | AppError::Migrate(_) | AppError::Runtime(_) => 1,
        }
    }
}

/// The whole program, given its arguments and environment.
pub fn main(args: impl IntoIterator<Item = OsString>, env: Vec<(String, String)>) -> Result<(), AppError> {
    match cli::parse(args)? {
        Command::Help => {
            println!("{}", cli::USAGE);
            Ok(())
        }
        Command::Version => {
            println!("azure-secrets-sidecar {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Check { config } => check(config, &env),
        Command::Run { config, once } => {
            let source = ConfigSource::resolve(config, &env);
            let cfg = config::load(source.path(), &env)?;
            run(cfg, source.path().to_path_buf(), &env, once)
        }
        Command::Probe { what, addr } => probe(what, addr, &env),
        Command::Inject { file, options } => inject(file, &options),
        Command::MigrateCsi { file, manifest, options, config_map_named } => {
            migrate_csi(file, manifest, &options, config_map_named)
        }
        #[cfg(feature = "demo")]
        Command::Demo { dir } => Ok(crate::demo::run(dir, build)?),
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => Err(AppError::Runtime(
            "this build has no demo (built without the `demo` feature, as the production image is); use a development build: cargo run -- demo".into(),
        )),
    }
}

fn check(flag: Option<PathBuf>, env: &[(String, String)]) -> Result<(), AppError> {
    let source = ConfigSource::resolve(flag, env);
    let cfg = config::load(source.path(), env)?;
    let ident = identity::resolve(&cfg.identity, &cfg.cloud, &AzureEnv::from_vars(env))?;
    println!("# config: {}", source.path().display());
    println!("# identity: {ident}");
    print!("{}", config::render(&cfg));
    Ok(())
}

/// `run` and `run --once`.
pub fn run(cfg: Config, path: PathBuf, env: &[(String, String)], once: bool) -> Result<(), AppError> {
    crate::logging::init(&cfg.log);
    let env = env.to_vec();
    block_on(async move {
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        signals::forward(tx.clone())
            .map_err(|e| AppError::Runtime(format!("failed to install signal handlers: {e}")))?;
        Ok(supervise::serve(cfg, build, env, once, cancel, Some((path, tx)), rx).await?)
    })
}

/// `probe ready|live`: exit 0 on a 200 from the health listener, 1 with a one-line reason.
fn probe(what: ProbeKind, addr: Option<String>, env: &[(String, String)]) -> Result<(), AppError> {
    let target = crate::probe::target(addr.as_deref(), env).map_err(|e| match e {
        crate::probe::TargetError::BadAddr(msg) => AppError::Usage(cli::UsageError(msg)),
        e => AppError::Runtime(format!("probe: {e}")),
    })?;
    let name = if what == ProbeKind::Ready { "ready" } else { "live" };
    block_on(async move {
        crate::probe::probe(target, what, crate::probe::TIMEOUT)
            .await
            .map_err(|e| AppError::Runtime(format!("probe {name}: {e}")))
    })
}

/// FILE, or stdin when `None`, as text.
fn read_input(command: &str, file: Option<&std::path::Path>) -> Result<String, AppError> {
    use std::io::Read;
    let (name, input) = match file {
        Some(path) => (path.display().to_string(), std::fs::read_to_string(path)),
        None => ("stdin".to_string(), {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map(|_| text)
        }),
    };
    input.map_err(|e| AppError::Runtime(format!("{command}: cannot read {name}: {e}")))
}

fn write_output(command: &str, output: &str) -> Result<(), AppError> {
    use std::io::Write;
    std::io::stdout()
        .write_all(output.as_bytes())
        .map_err(|e| AppError::Runtime(format!("{command}: cannot write stdout: {e}")))
}

/// `inject`: the YAML of FILE (or stdin) with the sidecar added, to stdout; nothing on a refusal.
fn inject(file: Option<PathBuf>, options: &crate::inject::Options) -> Result<(), AppError> {
    let input = read_input("inject", file.as_deref())?;
    let output = crate::inject::inject(&input, options)?;
    write_output("inject", &output)
}

/// `migrate csi`: the config to stdout (with `--manifest`: a ConfigMap holding it, then the
/// manifest with the sidecar where the CSI volume was); what did not map, on stderr too.
fn migrate_csi(
    file: Option<PathBuf>,
    manifest: Option<PathBuf>,
    options: &crate::inject::Options,
    config_map_named: bool,
) -> Result<(), AppError> {
    let input = read_input("migrate csi", file.as_deref())?;
    let migration = crate::migrate::migrate(&input)?;
    let output = match manifest {
        None => migration.config.clone(),
        Some(path) => {
            // One ConfigMap per class: two classes of a namespace under one name would replace
            // each other's config on `kubectl apply`.
            let mut options = options.clone();
            if !config_map_named {
                options.config_map = format!("{}-sidecar-config", migration.class);
                if let Some(problem) = options.problem() {
                    return Err(AppError::Usage(crate::cli::UsageError(format!(
                        "{problem} (named after the class; give --config-map NAME)"
                    ))));
                }
            }
            let options = &options;
            let pods = read_input("migrate csi", Some(path.as_path()).filter(|p| p.as_os_str() != "-"))?;
            let config_map = crate::migrate::config_map(&migration, &options.config_map);
            crate::inject::replace_csi(&pods, &migration.class, vec![config_map], options)?
        }
    };
    for note in &migration.notes {
        eprintln!("azure-secrets-sidecar: migrate csi: {note}");
    }
    write_output("migrate csi", &output)
}

/// config -> identity -> sources. Errors here are configuration errors (exit 2). The outputs
/// (the file writer, the listeners, the webhook) are the supervisor's: they outlive a reload.
fn build(cfg: &Config, env: &[(String, String)], metrics: Arc<Metrics>) -> Result<Built, RunError> {
    let azure_env = AzureEnv::from_vars(env);
    let resolved = identity::resolve(&cfg.identity, &cfg.cloud, &azure_env)?;
    let settings = HttpSettings {
        ca_file: cfg.tls.ca_file.clone(),
        ssl_cert_file: azure_env.ssl_cert_file.as_ref().map(PathBuf::from),
        request_timeout: cfg.sync.request_timeout,
    };
    let policy = RetryPolicy { max_retries: 3, min_backoff: cfg.sync.min_backoff, max_backoff: cfg.sync.max_backoff };
    let client = AzureClient::new(&settings, policy, metrics.clone())
        .map_err(|e| ConfigError { key: "tls.ca_file".into(), reason: e.to_string() })?;
    let tokens = Arc::new(TokenCache::new(identity::build(&resolved, client.clone()), metrics));

    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let mut required: Vec<RelPath> = Vec::new();
    for (source, id) in cfg.sources.iter().zip(config::source_ids(&cfg.sources)) {
        match source {
            SourceConfig::KeyVault(kv) => {
                required.extend(kv.secrets.iter().filter(|s| s.required).flat_map(|s| s.outputs()));
                sources.push(Box::new(KeyVaultSource::new(
                    id,
                    kv.clone(),
                    client.clone(),
                    tokens.clone(),
                    cfg.cloud.keyvault_scope(),
                    cfg.sync.concurrency,
                )));
            }
            SourceConfig::AppConfig(ac) => {
                if ac.format != config::Format::Files {
                    required.push(ac.path.clone());
                }
                sources.push(Box::new(AppConfigSource::new(
                    id,
                    ac.clone(),
                    client.clone(),
                    tokens.clone(),
                    cfg.cloud.appconfig_scope(),
                    cfg.cloud.keyvault_scope(),
                    cfg.cloud.keyvault_suffix().to_string(),
                )));
            }
        }
    }
    Ok(Built {
        pipeline: sync::Pipeline { sources, files: None, required, sync: cfg.sync.clone(), notify: None },
        identity: resolved,
    })
}
