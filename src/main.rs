// Temporary (wt/emulator): only the hidden `emulator` subcommand, so the contract tests can run
// the binary; the integrator's `app` replaces this file.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("emulator") {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
        let cancel = tokio_util::sync::CancellationToken::new();
        if let Err(e) = runtime.block_on(azure_secrets_sidecar::emulator::run_standalone(&args[1..], cancel)) {
            eprintln!("azure-secrets-sidecar: {e}");
            std::process::exit(2);
        }
    }
    std::process::exit(0);
}
