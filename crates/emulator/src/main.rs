//! `azure-emulator`: the emulator as a process, for containers, benchmarks and the Python
//! contract tests. Prints one JSON line (URLs, ids, CA file) once listening; stops on SIGTERM or
//! SIGINT. The flags are `azure_emulator::run_standalone`'s.

use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("azure-emulator: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| format!("failed to install signal handlers: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("failed to install signal handlers: {e}"))?;
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        });
        azure_emulator::run_standalone(&args, cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("azure-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}
