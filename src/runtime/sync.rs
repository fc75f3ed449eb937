//! The sync loop: every source polls on its own schedule (the first poll at once, later ones
//! every `interval` +/- jitter, or after an exponential backoff when a poll fails) and reports
//! to one publisher, which folds the report into the next `Snapshot` and publishes it when
//! something changed. The first publish waits until every source has reported once, so the app
//! gets all objects at once. A publish is one `spawn_blocking` that is never cancelled halfway.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::azure::Backoff;
use crate::config::SyncConfig;
use crate::output::files::FileOutput;
use crate::output::webhook::Notice;
use crate::published::{Health, Published};
use crate::snapshot::{Applied, Change, Snapshot};
use crate::source::{Polled, Source, SourceError};
use sidecar_core::relpath::RelPath;

/// Everything the loop needs, built from one validated config.
pub struct Pipeline {
    pub sources: Vec<Box<dyn Source>>,
    pub files: Option<Arc<FileOutput>>,
    /// Paths that gate readiness and `--once`.
    pub required: Vec<RelPath>,
    pub sync: SyncConfig,
    /// Told the changes of each publish (`on_change.webhook`); sending never waits.
    pub notify: Option<mpsc::UnboundedSender<Notice>>,
}

/// One poll's outcome, sent from a source task to the publisher.
struct Report {
    index: usize,
    id: String,
    result: Result<Polled, SourceError>,
    elapsed: Duration,
}

/// `interval` +/- `jitter` (a fraction), so pods scaled up together do not poll in step.
pub fn jittered(interval: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return interval;
    }
    let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
    interval.mul_f64(factor.max(0.0))
}

/// What a stopped loop hands to the next (a reload).
pub struct Stopped {
    /// The last snapshot it folded its reports into.
    pub snapshot: Arc<Snapshot>,
    /// Changes not yet told to the webhook: not published yet, or published by a publish the
    /// stop cut short before its notice. The next loop's first publish carries them.
    pub unsent: Vec<Change>,
}

/// Run until `cancel`. Returns the last snapshot and the changes not yet notified (a reload
/// hands both to the next run). `republish`: publish after the first round even if nothing
/// changed (after a reload, whose outputs or sources may differ from what is on disk).
pub async fn run(
    pipeline: Pipeline,
    published: Arc<Published>,
    health: Arc<Health>,
    initial: Stopped,
    mut republish: bool,
    cancel: CancellationToken,
) -> Stopped {
    let Pipeline { sources, files, required, sync, notify } = pipeline;
    let (tx, mut rx) = mpsc::channel::<Report>(sources.len().max(1));
    let mut waiting_first: Vec<bool> = vec![true; sources.len()];
    // Per source, the required objects its latest poll reported it could not get (an App
    // Configuration file of `format: files`): readiness waits for them too.
    let mut reported: Vec<Vec<RelPath>> = vec![Vec::new(); sources.len()];
    for (index, source) in sources.into_iter().enumerate() {
        tokio::spawn(poll_forever(index, source, sync.clone(), tx.clone(), cancel.clone()));
    }
    drop(tx);

    let mut current = initial.snapshot;
    // Changes folded into `current` and not yet on disk (a failed publish is retried) or not
    // yet notified.
    let mut pending: Vec<Change> = initial.unsent;
    loop {
        let report = tokio::select! {
            // After cancel, a report already queued never starts a publish.
            biased;
            _ = cancel.cancelled() => break,
            r = rx.recv() => match r { Some(r) => r, None => break },
        };
        health.beat();
        waiting_first[report.index] = false;
        if let Ok(polled) = &report.result {
            reported[report.index] = required_failures(polled);
        }
        health.metrics.sync_finished(&report.id, report.result.is_ok(), report.elapsed.as_secs_f64());
        let applied = current.apply(&report.id, &report.result);
        log_report(&report, &applied);
        pending.extend(applied.changes.iter().cloned());
        current = Arc::new(applied.snapshot);
        health.metrics.set_objects(&report.id, current.iter().filter(|(_, e)| e.source == report.id).count());
        if waiting_first.iter().any(|w| *w) {
            continue; // the first publish carries every source's objects at once
        }
        let never_published = published.current().is_none() || republish;
        // An empty set is published once something was (the last object gone is a removal
        // like any other); before that there is nothing to publish yet.
        let something = !current.is_empty() || published.current().is_some();
        if (!pending.is_empty() || never_published) && something {
            let result = publish(&files, &current).await;
            if cancel.is_cancelled() {
                // Stopped meanwhile (a reload or a shutdown): what is shared belongs to the next
                // loop now; the files this publish wrote are republished by it, and its changes
                // (`pending`) notified by it.
                break;
            }
            match result {
                Ok(()) => {
                    info!(objects = current.len(), changes = pending.len(), "published");
                    republish = false;
                    let changes = std::mem::take(&mut pending);
                    health.metrics.published(true);
                    published.set(current.clone());
                    if let (Some(notify), false) = (&notify, changes.is_empty()) {
                        let _ = notify.send(Notice { at: SystemTime::now(), changes });
                    }
                }
                Err(e) => {
                    health.metrics.published(false);
                    error!(error = %e, "failed to publish; the previous files stay and the publish is retried at the next poll")
                }
            }
        }
        let last = published.current();
        let wanted: Vec<RelPath> = required.iter().chain(reported.iter().flatten()).cloned().collect();
        let missing = last.as_ref().map(|s| s.missing(&wanted)).unwrap_or(wanted);
        if last.is_some() && missing.is_empty() && !health.ready.swap(true, Ordering::SeqCst) {
            info!("ready: every required object is published");
        }
    }
    Stopped { snapshot: current, unsent: pending }
}

/// The paths of the required objects a poll could not get.
fn required_failures(polled: &Polled) -> Vec<RelPath> {
    polled.failures.iter().filter(|f| f.required).map(|f| f.path.clone()).collect()
}

async fn publish(files: &Option<Arc<FileOutput>>, snapshot: &Arc<Snapshot>) -> Result<(), String> {
    let Some(files) = files.clone() else { return Ok(()) };
    let snap = snapshot.clone();
    // Never cancelled halfway: shutdown waits for it (bounded by the caller).
    tokio::task::spawn_blocking(move || files.publish(&snap))
        .await
        .map_err(|e| format!("publish task failed: {e}"))?
        .map_err(|e| e.to_string())
}

async fn poll_forever(
    index: usize,
    mut source: Box<dyn Source>,
    sync: SyncConfig,
    tx: mpsc::Sender<Report>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(sync.min_backoff, sync.max_backoff);
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = source.poll(&cancel) => r,
            _ = cancel.cancelled() => return,
        };
        if matches!(result, Err(SourceError::Cancelled)) {
            return;
        }
        let delay = match &result {
            Ok(_) => {
                backoff.reset();
                jittered(sync.interval, sync.jitter)
            }
            Err(_) => backoff.next_delay(),
        };
        let report = Report { index, id: source.id().to_string(), result, elapsed: started.elapsed() };
        if tx.send(report).await.is_err() {
            return;
        }
        debug!(source = source.id(), next_in = ?delay, "next poll scheduled");
        tokio::select! {
            _ = super::timer::sleep(delay) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

fn log_report(report: &Report, applied: &Applied) {
    match &report.result {
        Ok(polled) => {
            debug!(source = %report.id, objects = polled.objects.len(), elapsed = ?report.elapsed, "poll finished");
            for f in polled.failures.iter().filter(|f| !applied.kept.iter().any(|k| k.path == f.path)) {
                warn!(source = %report.id, name = %f.name, path = %f.path, required = f.required, reason = %f.reason,
                    "could not fetch; nothing published for it yet");
            }
        }
        Err(e) => warn!(source = %report.id, error = %e, "poll failed; everything published from this source stays"),
    }
    for k in &applied.kept {
        warn!(source = %report.id, name = %k.name, path = %k.path, reason = %k.reason, "could not fetch; the last published value stays");
    }
    for c in &applied.conflicts {
        warn!(source = %report.id, conflict = %c, "object not published");
    }
    for c in &applied.changes {
        match c {
            Change::Added { path, version } => info!(source = %report.id, %path, %version, "added"),
            Change::Updated { path, old_version, new_version } => {
                info!(source = %report.id, %path, from = %old_version, to = %new_version, "updated")
            }
            Change::Removed { path, version } => info!(source = %report.id, %path, %version, "removed"),
        }
    }
}

/// `--once`: poll every source until it succeeds with all its required objects or `deadline`
/// passes, publish once, and say which required objects are missing.
pub async fn once(
    pipeline: Pipeline,
    published: Arc<Published>,
    health: Arc<Health>,
    deadline: Duration,
    cancel: CancellationToken,
) -> Result<(), Vec<String>> {
    let Pipeline { sources, files, required, sync, .. } = pipeline;
    let until = Instant::now() + deadline;
    let mut current = Arc::new(Snapshot::default());
    let mut wanted = required.clone();
    for mut source in sources {
        let mut backoff = Backoff::new(sync.min_backoff, sync.max_backoff);
        loop {
            let started = Instant::now();
            let result = source.poll(&cancel).await;
            health.metrics.sync_finished(source.id(), result.is_ok(), started.elapsed().as_secs_f64());
            let complete = matches!(&result, Ok(p) if p.failures.iter().all(|f| !f.required));
            let failed = result.as_ref().map(required_failures).unwrap_or_default();
            let applied = current.apply(source.id(), &result);
            let report = Report { index: 0, id: source.id().to_string(), result, elapsed: started.elapsed() };
            log_report(&report, &applied);
            current = Arc::new(applied.snapshot);
            let delay = backoff.next_delay();
            if complete || cancel.is_cancelled() || Instant::now() + delay > until {
                wanted.extend(failed);
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => break,
            }
        }
    }
    if !current.is_empty() {
        publish(&files, &current).await.map_err(|e| vec![format!("publish failed: {e}")])?;
        info!(objects = current.len(), "published");
        published.set(current.clone());
    }
    let missing = current.missing(&wanted);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.iter().map(|p| p.to_string()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::jittered;
    use std::time::Duration;

    #[test]
    fn jitter_stays_within_its_fraction() {
        let base = Duration::from_secs(60);
        for _ in 0..1000 {
            let d = jittered(base, 0.1);
            assert!(d >= Duration::from_secs(54) && d <= Duration::from_secs(66), "{d:?}");
        }
        assert_eq!(jittered(base, 0.0), base);
    }
}
