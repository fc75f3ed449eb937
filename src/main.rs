//! azure-secrets-sidecar: parse nothing here; hand over to `app` and map its error to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let env: Vec<(String, String)> =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    match azure_secrets_sidecar::app::main(std::env::args_os(), env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("azure-secrets-sidecar: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
