//! The `azure-emulator` command line: start an emulator in this process, print one JSON line
//! with everything a client needs (URLs, tenant and client ids, CA file), serve until cancelled.
//! For containers, benchmarks and the Python contract tests.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Emulator, EmulatorConfig};

const USAGE: &str = "usage: azure-emulator [--bind IP] [--advertise-host HOST] [--state-dir DIR] \
                     [--vault NAME]... [--store NAME]... [--store-replicas N] [--seed FILE] [--secrets N] [--token-lifetime 1h] [--tenant-id ID] [--client-id ID] [--arc-key-dir DIR] \
                     [--dns-domain DOMAIN] [--managed-hsm NAME]... [--vault-tenant VAULT=TENANT]... \
                     [--keyvault-resource URL] [--managedhsm-resource URL] [--token-proxy-sni NAME]";

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    config: EmulatorConfig,
    seed: Option<PathBuf>,
    generated_secrets: usize,
}

/// Run the emulator until `cancel`. `args` are the flags after the subcommand name:
/// `--bind IP`, `--advertise-host HOST`, `--state-dir DIR`, `--vault NAME` (repeatable; default
/// `demo`), `--store NAME` (an App Configuration store; repeatable), `--store-replicas N`
/// (each store also served on N replica addresses, listed in the info line's
/// `appconfig_replicas`), `--seed FILE` (JSON
/// `{"vault": {"secret-name": "value"}}`; its vaults are created),
/// `--secrets N` (`secret-0000`.. in every vault, value `value-0000`..), `--token-lifetime 1h`,
/// `--tenant-id ID`, `--client-id ID`, `--arc-key-dir DIR` (where the Arc endpoint writes its
/// challenge key files), `--dns-domain DOMAIN` (vaults named `{vault}.vault.DOMAIN` and
/// `{hsm}.managedhsm.DOMAIN`, reached through the CONNECT proxy of the info line's `proxy_url`),
/// `--managed-hsm NAME` (repeatable), `--vault-tenant VAULT=TENANT` (a vault in another tenant),
/// `--keyvault-resource URL`, `--managedhsm-resource URL` (the audiences), `--token-proxy-sni NAME`
/// (an AKS token proxy: `token_proxy_url`, `token_proxy_ca_file`). Prints one JSON line
/// to stdout once listening.
pub async fn run_standalone(args: &[String], cancel: CancellationToken) -> Result<(), String> {
    let mut options = parse_args(args)?;
    let seed = match &options.seed {
        Some(path) => read_seed(path).await?,
        None => BTreeMap::new(),
    };
    for vault in seed.keys() {
        if !options.config.vaults.contains(vault) {
            options.config.vaults.push(vault.clone());
        }
    }
    let emulator = Emulator::start(options.config).await.map_err(|e| format!("failed to start the emulator: {e}"))?;
    let fill = || -> Result<(), String> {
        for (vault, secrets) in &seed {
            for (name, value) in secrets {
                emulator.set_secret(vault, name, value).map_err(|e| format!("failed to seed secret {name:?}: {e}"))?;
            }
        }
        for vault in emulator.vault_urls().keys() {
            for i in 0..options.generated_secrets {
                let (name, value) = (format!("secret-{i:04}"), format!("value-{i:04}"));
                emulator
                    .set_secret(vault, &name, &value)
                    .map_err(|e| format!("failed to generate secret {name:?}: {e}"))?;
            }
        }
        Ok(())
    };
    if let Err(e) = fill() {
        emulator.shutdown().await;
        return Err(e);
    }

    // One line, flushed, so a parent process can read it and go.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", emulator.info())
        .and_then(|_| stdout.flush())
        .map_err(|e| format!("failed to print the emulator's address line: {e}"))?;
    drop(stdout);

    cancel.cancelled().await;
    emulator.shutdown().await;
    Ok(())
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut config = EmulatorConfig { vaults: Vec::new(), ..EmulatorConfig::default() };
    let mut seed = None;
    let mut generated_secrets = 0;
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let mut value = || iter.next().cloned().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--bind" => {
                let v = value()?;
                config.bind = v
                    .parse::<IpAddr>()
                    .map_err(|e| format!("--bind {v:?}: {e}; use an IP address such as 127.0.0.1"))?;
            }
            "--advertise-host" => config.advertise_host = Some(value()?),
            "--state-dir" => config.state_dir = Some(PathBuf::from(value()?)),
            "--vault" => config.vaults.push(value()?),
            "--store" => config.appconfig_stores.push(value()?),
            "--store-replicas" => {
                let v = value()?;
                config.appconfig_replicas =
                    v.parse().map_err(|e| format!("--store-replicas {v:?}: {e}; use a count such as 1"))?;
            }
            "--seed" => seed = Some(PathBuf::from(value()?)),
            "--secrets" => {
                let v = value()?;
                generated_secrets = v.parse().map_err(|e| format!("--secrets {v:?}: {e}; use a count such as 100"))?;
            }
            "--token-lifetime" => config.token_lifetime = parse_lifetime(&value()?)?,
            "--tenant-id" => config.tenant_id = value()?,
            "--client-id" => config.client_id = value()?,
            "--arc-key-dir" => config.arc_key_dir = Some(PathBuf::from(value()?)),
            "--dns-domain" => config.dns_domain = Some(value()?),
            "--managed-hsm" => config.managed_hsms.push(value()?),
            "--vault-tenant" => {
                let v = value()?;
                let (vault, tenant) =
                    v.split_once('=').ok_or_else(|| format!("--vault-tenant {v:?}: use VAULT=TENANT"))?;
                config.vault_tenants.insert(vault.to_owned(), tenant.to_owned());
            }
            "--keyvault-resource" => config.keyvault_resource = value()?,
            "--managedhsm-resource" => config.managedhsm_resource = value()?,
            "--token-proxy-sni" => config.token_proxy_sni = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown emulator flag {other:?}\n{USAGE}")),
        }
    }
    if config.vaults.is_empty() && seed.is_none() {
        config.vaults.push("demo".to_owned());
    }
    Ok(Options { config, seed, generated_secrets })
}

/// `1h`, `30m`, `90s`, `1h30m`, `250ms`.
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let bad = || format!("--token-lifetime {text:?}: use a duration such as 1h, 30m, 90s or 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "h" => Duration::from_secs(number * 3600),
            "m" => Duration::from_secs(number * 60),
            "s" => Duration::from_secs(number),
            "ms" => Duration::from_millis(number),
            _ => return Err(bad()),
        };
        total += part;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

async fn read_seed(path: &PathBuf) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("failed to read the seed file {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "failed to parse the seed file {}: {e}; expected {{\"vault\": {{\"secret-name\": \"value\"}}}}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_fill_the_config_and_default_vault_is_demo() {
        let o =
            parse_args(&args(&["--bind", "::1", "--secrets", "30", "--token-lifetime", "1h30m", "--tenant-id", "t"]))
                .unwrap();
        assert_eq!(o.config.bind.to_string(), "::1");
        assert_eq!(o.generated_secrets, 30);
        assert_eq!(o.config.token_lifetime, Duration::from_secs(5400));
        assert_eq!(o.config.tenant_id, "t");
        assert_eq!(o.config.vaults, ["demo"]);
        let o = parse_args(&args(&["--vault", "a", "--vault", "b"])).unwrap();
        assert_eq!(o.config.vaults, ["a", "b"]);
    }

    #[test]
    fn bad_flags_are_refused_with_usage() {
        assert!(parse_args(&args(&["--nope"])).unwrap_err().contains("usage:"));
        assert!(parse_args(&args(&["--vault"])).unwrap_err().contains("needs a value"));
        assert!(parse_args(&args(&["--bind", "localhost"])).is_err());
    }

    #[test]
    fn lifetimes_parse_in_spec_form() {
        assert_eq!(parse_lifetime("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_lifetime("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_lifetime("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_lifetime("").is_err());
        assert!(parse_lifetime("1d").is_err());
        assert!(parse_lifetime("h").is_err());
    }
}
