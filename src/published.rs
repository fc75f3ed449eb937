//! What the sync loop shares with the listeners, split by reader so that each sees only its
//! part: `Published` (the snapshot last published, read by the HTTP output `output::serve`) and
//! `Health` (the readiness latch, the loop's heartbeat and the metrics, read by `health`).
//! `health` takes a `Health` only, so no secret can reach it: that is a fact of the types.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// The snapshot last published (to files when configured): HTTP serves exactly this.
pub struct Published {
    tx: watch::Sender<Option<Arc<Snapshot>>>,
}

impl Published {
    pub fn new() -> Arc<Published> {
        Arc::new(Published { tx: watch::channel(None).0 })
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.tx.borrow().clone()
    }

    pub fn set(&self, snapshot: Arc<Snapshot>) {
        self.tx.send_replace(Some(snapshot));
    }
}

/// What `/healthz`, `/readyz` and `/metrics` read.
pub struct Health {
    /// Latched once every required object has been published; stays set through outages.
    pub ready: AtomicBool,
    /// Unix seconds of the loop's last turn, for `/healthz`.
    pub heartbeat: AtomicU64,
    /// Seconds without a turn after which `/healthz` says the loop is stuck (set from the
    /// running config, so a reload changes it).
    stale_after: AtomicU64,
    pub metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Health> {
        Arc::new(Health {
            ready: AtomicBool::new(false),
            heartbeat: AtomicU64::new(unix_now()),
            stale_after: AtomicU64::new(u64::MAX),
            metrics,
        })
    }

    pub fn set_stale_after(&self, limit: Duration) {
        self.stale_after.store(limit.as_secs(), Ordering::Relaxed);
    }

    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.stale_after.load(Ordering::Relaxed))
    }

    pub fn beat(&self) {
        self.heartbeat.store(unix_now(), Ordering::Relaxed);
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
