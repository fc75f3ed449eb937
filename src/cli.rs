//! The command line of SPEC.md, parsed by hand (six commands and a dozen flags do not need a
//! parser crate in a binary that must stay small). Usage errors are exit code 2.

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run {
        config: Option<PathBuf>,
        once: bool,
    },
    Check {
        config: Option<PathBuf>,
    },
    Demo {
        dir: Option<PathBuf>,
    },
    Probe {
        what: ProbeKind,
        addr: Option<String>,
    },
    /// `inject [-f FILE]`: no file or `-` is stdin.
    Inject {
        file: Option<PathBuf>,
        options: crate::inject::Options,
    },
    /// `migrate csi [-f FILE] [--manifest FILE]`: no file or `-` is stdin. With a manifest,
    /// `options` are inject's for it (the mount path comes from the CSI volume; without
    /// `--config-map`, `config_map_named` false, the ConfigMap is named after the class).
    MigrateCsi {
        file: Option<PathBuf>,
        manifest: Option<PathBuf>,
        options: crate::inject::Options,
        config_map_named: bool,
    },
    Version,
    Help,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Ready,
    Live,
}

pub const USAGE: &str = "\
usage:
  azure-secrets-sidecar [run] [--config PATH] [--once]   run until SIGTERM (default)
  azure-secrets-sidecar check [--config PATH]            validate and print the resolved config
  azure-secrets-sidecar demo [--dir DIR]                 try it locally, no Azure account needed
  azure-secrets-sidecar probe (ready|live) [--addr A]    exec probe against the health listener
  azure-secrets-sidecar inject [-f FILE]                 add the sidecar to Kubernetes YAML (stdin -> stdout)
      [--image IMAGE] [--config-map NAME] [--mount-path PATH] [--classic] [--http]
  azure-secrets-sidecar migrate csi [-f FILE]            a CSI SecretProviderClass -> a sidecar config
      [--manifest FILE [--image IMAGE] [--config-map NAME] [--classic]]
                                                         with the pod's YAML: a ConfigMap and the pod with
                                                         the sidecar's volume where the CSI volume was
  azure-secrets-sidecar version

The config path is --config, else $SIDECAR_CONFIG, else /etc/azure-secrets-sidecar/config.yaml.";

/// A usage error: the message says what was wrong; the caller prints it with `USAGE`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut args: Vec<String> = args
        .into_iter()
        .skip(1)
        .map(|a| a.into_string().map_err(|a| UsageError(format!("argument {a:?} is not valid UTF-8"))))
        .collect::<Result<_, _>>()?;
    let cmd = match args.first().map(String::as_str) {
        None => "run".to_string(),
        Some(a) if a.starts_with('-') => "run".to_string(),
        Some(_) => args.remove(0),
    };
    let mut it = args.into_iter();
    let mut config = None;
    let mut once = false;
    let mut dir = None;
    let mut addr = None;
    let mut probe = None;
    let mut file = None;
    let mut inject = crate::inject::Options::default();
    let mut manifest = None;
    let mut migrate_what = None;
    let mut inject_flags = false;
    let mut config_map_named = false;
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, UsageError> {
            inline.clone().or_else(|| it.next()).ok_or_else(|| UsageError(format!("{name} needs a value")))
        };
        match (cmd.as_str(), flag.as_str()) {
            (_, "-h" | "--help") => return Ok(Command::Help),
            ("run" | "check", "--config" | "-c") => config = Some(PathBuf::from(value("--config")?)),
            ("run", "--once") if inline.is_none() => once = true,
            ("demo", "--dir") => dir = Some(PathBuf::from(value("--dir")?)),
            ("probe", "--addr") => addr = Some(value("--addr")?),
            ("inject", "-f" | "--file") => file = Some(PathBuf::from(value("-f")?)),
            ("inject", "--image") => inject.image = value("--image")?,
            ("inject", "--config-map") => inject.config_map = value("--config-map")?,
            ("inject", "--mount-path") => inject.mount_path = value("--mount-path")?,
            ("inject", "--classic") if inline.is_none() => inject.classic = true,
            ("inject", "--http") if inline.is_none() => inject.http = true,
            ("migrate", "csi") if migrate_what.is_none() => migrate_what = Some("csi"),
            ("migrate", "-f" | "--file") => file = Some(PathBuf::from(value("-f")?)),
            ("migrate", "--manifest") => manifest = Some(PathBuf::from(value("--manifest")?)),
            ("migrate", "--image") => (inject.image, inject_flags) = (value("--image")?, true),
            ("migrate", "--config-map") => {
                (inject.config_map, inject_flags, config_map_named) = (value("--config-map")?, true, true)
            }
            ("migrate", "--classic") if !inject.classic && inline.is_none() => {
                (inject.classic, inject_flags) = (true, true)
            }
            ("probe", "ready") if probe.is_none() => probe = Some(ProbeKind::Ready),
            ("probe", "live") if probe.is_none() => probe = Some(ProbeKind::Live),
            _ => return Err(UsageError(format!("unexpected argument {arg:?} for command {cmd:?}"))),
        }
    }
    Ok(match cmd.as_str() {
        "run" => Command::Run { config, once },
        "check" => Command::Check { config },
        "demo" => Command::Demo { dir },
        "probe" => {
            Command::Probe { what: probe.ok_or_else(|| UsageError("probe needs 'ready' or 'live'".into()))?, addr }
        }
        "inject" => {
            if let Some(problem) = inject.problem() {
                return Err(UsageError(problem));
            }
            Command::Inject { file: file.filter(|f| f.as_os_str() != "-"), options: inject }
        }
        "migrate" => {
            if migrate_what.is_none() {
                return Err(UsageError("migrate needs what to migrate from: migrate csi".into()));
            }
            if inject_flags && manifest.is_none() {
                return Err(UsageError("--image, --config-map and --classic go with --manifest".into()));
            }
            if let Some(problem) = inject.problem() {
                return Err(UsageError(problem));
            }
            let stdin = |f: Option<PathBuf>| f.filter(|f| f.as_os_str() != "-");
            if file.is_none() && manifest.as_ref().is_some_and(|m| m.as_os_str() == "-") {
                return Err(UsageError("only one of -f and --manifest can be stdin".into()));
            }
            Command::MigrateCsi { file: stdin(file), manifest, options: inject, config_map_named }
        }
        "version" | "--version" => Command::Version,
        "help" => Command::Help,
        other => return Err(UsageError(format!("unknown command {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, UsageError> {
        parse(std::iter::once("bin").chain(args.iter().copied()).map(OsString::from))
    }

    #[test]
    fn run_is_the_default_command() {
        assert_eq!(p(&[]).unwrap(), Command::Run { config: None, once: false });
        assert_eq!(
            p(&["--config", "/c.yaml", "--once"]).unwrap(),
            Command::Run { config: Some("/c.yaml".into()), once: true }
        );
        assert_eq!(
            p(&["run", "--config=/c.yaml"]).unwrap(),
            Command::Run { config: Some("/c.yaml".into()), once: false }
        );
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(p(&["check", "-c", "x"]).unwrap(), Command::Check { config: Some("x".into()) });
        assert_eq!(p(&["demo", "--dir", "d"]).unwrap(), Command::Demo { dir: Some("d".into()) });
        assert_eq!(
            p(&["probe", "ready", "--addr", "127.0.0.1:8201"]).unwrap(),
            Command::Probe { what: ProbeKind::Ready, addr: Some("127.0.0.1:8201".into()) }
        );
        assert_eq!(p(&["version"]).unwrap(), Command::Version);
        assert_eq!(p(&["inject"]).unwrap(), Command::Inject { file: None, options: Default::default() });
        assert_eq!(
            p(&[
                "inject",
                "-f",
                "-",
                "--classic",
                "--http",
                "--mount-path=/s",
                "--image",
                "r/i:1",
                "--config-map",
                "c"
            ])
            .unwrap(),
            Command::Inject {
                file: None,
                options: crate::inject::Options {
                    image: "r/i:1".into(),
                    config_map: "c".into(),
                    mount_path: "/s".into(),
                    classic: true,
                    http: true
                }
            }
        );
        assert_eq!(
            p(&["inject", "--file", "d.yaml"]).unwrap(),
            Command::Inject { file: Some("d.yaml".into()), options: Default::default() }
        );
        assert_eq!(
            p(&["migrate", "csi", "-f", "spc.yaml"]).unwrap(),
            Command::MigrateCsi {
                file: Some("spc.yaml".into()),
                manifest: None,
                options: Default::default(),
                config_map_named: false
            }
        );
        assert_eq!(
            p(&["migrate", "csi", "--manifest", "d.yaml", "--config-map=c", "--classic"]).unwrap(),
            Command::MigrateCsi {
                file: None,
                manifest: Some("d.yaml".into()),
                options: crate::inject::Options { config_map: "c".into(), classic: true, ..Default::default() },
                config_map_named: true
            }
        );
        assert!(p(&["migrate"]).unwrap_err().0.contains("migrate csi"));
        assert!(p(&["migrate", "csi", "--classic"]).unwrap_err().0.contains("--manifest"));
        assert!(p(&["migrate", "csi", "--manifest", "-"]).unwrap_err().0.contains("stdin"));
        assert!(p(&["emulator"]).is_err(), "the emulator is its own binary (azure-emulator)");
    }

    #[test]
    fn bad_usage_is_named() {
        assert!(p(&["frobnicate"]).unwrap_err().0.contains("frobnicate"));
        assert!(p(&["check", "--once"]).unwrap_err().0.contains("--once"));
        assert!(p(&["run", "--config"]).unwrap_err().0.contains("needs a value"));
        assert!(p(&["probe"]).unwrap_err().0.contains("ready"));
        assert!(p(&["inject", "--mount-path", "rel"]).unwrap_err().0.contains("--mount-path"));
        assert!(p(&["inject", "--classic=yes"]).unwrap_err().0.contains("--classic"));
    }
}
