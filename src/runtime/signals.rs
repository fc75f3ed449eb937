//! Signals: a dedicated thread (signal-hook) turns SIGTERM, SIGINT and SIGHUP into `Control`
//! messages. The only signal handler in the process.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

use super::{Control, ReloadReason};

/// Start forwarding signals to `tx`. Fails only if the handlers cannot be registered.
pub fn forward(tx: mpsc::UnboundedSender<Control>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            let msg = match sig {
                SIGTERM => Control::Shutdown("SIGTERM"),
                SIGINT => Control::Shutdown("SIGINT"),
                _ => Control::Reload(ReloadReason::Sighup),
            };
            if tx.send(msg).is_err() {
                break;
            }
        }
    })?;
    Ok(())
}
