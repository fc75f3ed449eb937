//! Consistency under load against the real binary: 1,000 concurrent readers (threads reading
//! the files through `..data`, tasks reading over HTTP) during 200 publishes see no torn value
//! and no mixed snapshot; SIGTERM (and SIGKILL) in the middle of a publish leave one complete
//! snapshot; a restart over an existing output directory adopts it, cleans what an interrupted
//! publish left, and keeps the old values until the new publish.
//!
//! Values name their vault, generation and secret and have a length derived from them, so a
//! torn read (a different length or content) and a mixed set (two generations of one vault
//! under one `..data`) are both detectable. Each test prints a `FIGURE` line.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use support::*;

const LIMIT: Duration = Duration::from_secs(60);
const STORES: [&str; 8] = ["sa", "sb", "sc", "sd", "se", "sf", "sg", "sh"];
const KEYS: [&str; 4] = ["k1", "k2", "k3", "k4"];
/// How long each reader waits between two reads.
const PACE: Duration = Duration::from_millis(100);
const FILE_READERS: usize = 700;
const HTTP_READERS: usize = 300;
const PUBLISHES: u64 = 200;

/// The value of `name` in `vault` at generation `g`: its header (see [`header`]) repeated up
/// to a length (1-4 KiB) that follows from all three.
fn value(vault: &str, g: u64, name: &str) -> String {
    let (header, len) = (header(vault, g, name), expected_len(vault, g, name));
    let mut v = header.repeat(len.div_ceil(header.len()));
    v.truncate(len);
    v
}

fn header(vault: &str, g: u64, name: &str) -> String {
    format!("{vault}|{g:06}|{name}|")
}

fn expected_len(vault: &str, g: u64, name: &str) -> usize {
    1024 + (g as usize * 131 + name.len() * 17 + vault.len() * 7) % 3072
}

/// The generation a value claims, if the whole value is exactly what that generation wrote.
/// Checked in place, chunk by chunk, without building the value: 1,000 readers check
/// hundreds of thousands of values a second, and a check that allocates and copies them
/// (in a debug build) took the CPU the sidecar and the emulator under test needed.
fn check(vault: &str, name: &str, bytes: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{vault}/{name}: not UTF-8 ({} bytes)", bytes.len()))?;
    let g: u64 = text
        .split('|')
        .nth(1)
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| format!("{vault}/{name}: no header ({} bytes)", bytes.len()))?;
    let header = header(vault, g, name);
    let whole = bytes.len() == expected_len(vault, g, name)
        && bytes.chunks(header.len()).all(|chunk| chunk == &header.as_bytes()[..chunk.len()]);
    if whole {
        Ok(g)
    } else {
        Err(format!("{vault}/{name}: torn or foreign value ({} bytes, generation {g})", bytes.len()))
    }
}

#[test]
fn check_takes_a_whole_value_and_refuses_a_torn_or_foreign_one() {
    let v = value("sa", 7, "k1");
    assert_eq!(check("sa", "k1", v.as_bytes()), Ok(7));
    assert!(check("sa", "k1", &v.as_bytes()[..v.len() - 1]).is_err(), "cut short");
    let mut spliced = v.clone().into_bytes();
    let at = spliced.len() / 2;
    spliced[at] ^= 1;
    assert!(check("sa", "k1", &spliced).is_err(), "one byte changed");
    let other = value("sa", 8, "k1");
    let mixed = format!("{}{}", &v[..v.len() / 2], &other[other.len() / 2..]);
    assert!(check("sa", "k1", mixed.as_bytes()).is_err(), "two generations in one value");
    assert!(check("sb", "k1", v.as_bytes()).is_err(), "another store's value");
}

#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    /// A reader resolved `..data`, then the snapshot went away under it (a newer publish
    /// removed it): retried, as readers of ConfigMap volumes do.
    retries: AtomicU64,
    torn: AtomicU64,
    mixed: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, counter: &AtomicU64, e: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(e);
        }
    }
}

/// One read of every file below one resolution of `..data`: each value whole, and one
/// generation per store.
fn read_files_once(out: &Path, tally: &Tally) {
    let Ok(target) = std::fs::read_link(out.join("..data")) else { return };
    let dir = out.join(target);
    let mut by_store: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for store in STORES {
        for key in KEYS {
            match std::fs::read(dir.join(store).join(key)) {
                Ok(bytes) => match check(store, key, &bytes) {
                    Ok(g) => {
                        by_store.entry(store).or_default().insert(g);
                    }
                    Err(e) => return tally.fail(&tally.torn, e),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tally.retries.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => return tally.fail(&tally.torn, format!("{store}/{key}: {e}")),
            }
        }
    }
    for (store, gens) in by_store {
        if gens.len() != 1 {
            return tally.fail(&tally.mixed, format!("files: {store} mixes generations {gens:?} under one ..data"));
        }
    }
    tally.reads.fetch_add(1, Ordering::Relaxed);
}

/// ETag -> (path, generation), as first seen: the same ETag must always come with the same
/// value.
type Seen = Arc<RwLock<HashMap<String, (String, u64)>>>;

/// One HTTP read. Every fourth is the listing (every path present: never a partial set);
/// the others read one value, which must be whole, carry the ETag of its own generation, and
/// never be older than what this reader already saw for that path.
async fn read_http_once(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    seen: &Seen,
    latest: &mut HashMap<String, u64>,
    i: u64,
    tally: &Tally,
) {
    if i % 4 == 0 {
        let Ok(resp) = http.get(format!("{base}/v1/secrets")).header("X-Sidecar-Token", token).send().await else {
            return;
        };
        let Ok(items) = resp.json::<Vec<serde_json::Value>>().await else {
            return tally.fail(&tally.torn, "listing: not JSON".into());
        };
        let paths: BTreeSet<&str> = items.iter().filter_map(|i| i["path"].as_str()).collect();
        if paths.len() != STORES.len() * KEYS.len() {
            return tally.fail(&tally.mixed, format!("listing: {} paths", paths.len()));
        }
        tally.reads.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let store = STORES[(i as usize / 4) % STORES.len()];
    let key = KEYS[i as usize % KEYS.len()];
    let path = format!("{store}/{key}");
    let Ok(resp) = http.get(format!("{base}/v1/secrets/{path}")).header("X-Sidecar-Token", token).send().await else {
        return;
    };
    let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let Ok(body) = resp.bytes().await else { return tally.fail(&tally.torn, format!("HTTP {path}: body cut")) };
    let g = match check(store, key, &body) {
        Ok(g) => g,
        Err(e) => return tally.fail(&tally.torn, format!("HTTP {e}")),
    };
    let first = seen.write().unwrap().entry(etag.clone()).or_insert_with(|| (path.clone(), g)).clone();
    if first != (path.clone(), g) {
        return tally
            .fail(&tally.mixed, format!("HTTP {path}: ETag {etag} with generation {g}, first seen with {first:?}"));
    }
    let last = latest.entry(path.clone()).or_insert(g);
    if g < *last {
        return tally.fail(&tally.mixed, format!("HTTP {path}: generation {g} after {last}"));
    }
    *last = g;
    tally.reads.fetch_add(1, Ordering::Relaxed);
}

async fn appconfig_world(stores: &[&str]) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        state_dir: Some(tmp.path().join("emulator")),
        vaults: vec!["main".into()],
        appconfig_stores: stores.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    World { emu, tmp }
}

/// 1,000 readers, 200 publishes. The sources are App Configuration stores rendered as
/// `format: files` (one file per key), each store's keys changed in one step and read in one
/// page: so every poll sees one generation per store, and any mix a reader finds was made on
/// the way to the files or the HTTP answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_readers_see_no_torn_read_and_no_mixed_snapshot_during_200_publishes() {
    let w = appconfig_world(&STORES).await;
    let set_generation = |store: &str, g: u64| {
        let values: Vec<(String, String)> = KEYS.iter().map(|k| (k.to_string(), value(store, g, k))).collect();
        let kvs: Vec<(&str, Option<&str>, &str)> = values.iter().map(|(k, v)| (k.as_str(), None, v.as_str())).collect();
        w.emu.set_kvs(store, &kvs, None).unwrap();
    };
    for store in STORES {
        set_generation(store, 0);
    }
    let sources: String = STORES
        .iter()
        .map(|s| {
            format!(
                "  - type: appconfig\n    endpoint: \"{}\"\n    format: files\n    path: {s}\n",
                w.emu.store_url(s).unwrap()
            )
        })
        .collect();
    // The output on tmpfs, as an `emptyDir` with `medium: Memory` is (where it exists).
    let shm = Path::new("/dev/shm");
    let mem = if shm.is_dir() { tempfile::tempdir_in(shm).ok() } else { None };
    let out = mem.as_ref().map(|m| m.path().join("out")).unwrap_or_else(|| w.out());
    let base = w.base_config_at("1s", "info").replace(&w.out().display().to_string(), &out.display().to_string());
    let cfg = w.write_config(&format!("{base}sources:\n{sources}"));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (_, serve) = listener_addrs(&sc).await;
    let last = format!("{}/{}", STORES[STORES.len() - 1], KEYS[KEYS.len() - 1]);
    wait_for("generation 0 published", LIMIT, || read(&out, &last)).await;
    let token = std::fs::read_to_string(out.join(".sidecar-token")).unwrap().trim().to_string();
    // Read before the readers start: under their load this process's own request can wait
    // seconds between its connect and its first byte, and the health listener rightly closes
    // a connection that sends no request head within its 2 s header timeout. Nothing changes
    // in the stores until the writer below starts, so no publish is missed by reading early.
    let publishes_before = publish_count(&sc).await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..FILE_READERS {
        let (out, tally, stop) = (out.clone(), tally.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            // The app's CPU is not the sidecar's: in a pod each container has its own share.
            // On one 2-core machine, 700 readers at the same priority as the sidecar and the
            // emulator took 98% of the CPU, polls timed out and the test measured starvation
            // (90 publishes in 600 s, at 51c3c1d as at HEAD). At nice 19 (per thread on Linux)
            // they still read all the time the others leave.
            let _ = rustix::process::setpriority_process(None, 19);
            while !stop.load(Ordering::Relaxed) {
                read_files_once(&out, &tally);
                // Pacing, not synchronisation: a reader reads ten times a second.
                std::thread::sleep(PACE);
            }
        }));
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(HTTP_READERS).build().unwrap();
    let base = format!("http://{serve}");
    let seen: Seen = Arc::default();
    let mut tasks = Vec::new();
    for r in 0..HTTP_READERS as u64 {
        let (http, base, token, seen, tally, stop) =
            (http.clone(), base.clone(), token.clone(), seen.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut i, mut latest) = (r, HashMap::new());
            while !stop.load(Ordering::Relaxed) {
                read_http_once(&http, &base, &token, &seen, &mut latest, i, &tally).await;
                i += 1;
                tokio::time::sleep(PACE).await;
            }
        }));
    }

    // The writer: once a store's generation g is on disk, its g+1 goes into the emulator.
    let started = Instant::now();
    let mut generation: BTreeMap<&str, u64> = STORES.iter().map(|s| (*s, 0)).collect();
    let mut changed = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while changed < PUBLISHES {
        assert!(Instant::now() < deadline, "only {changed} publishes in 600 s");
        for store in STORES {
            let g = generation[store];
            let probe = format!("{store}/{}", KEYS[0]);
            if read(&out, &probe).and_then(|v| check(store, KEYS[0], v.as_bytes()).ok()) == Some(g) {
                set_generation(store, g + 1);
                generation.insert(store, g + 1);
                if g > 0 {
                    changed += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let publishes = publish_count(&sc).await - publishes_before;
    let errors = tally.errors.lock().unwrap().clone();
    let (reads, retries, torn, mixed) = (
        tally.reads.load(Ordering::Relaxed),
        tally.retries.load(Ordering::Relaxed),
        tally.torn.load(Ordering::Relaxed),
        tally.mixed.load(Ordering::Relaxed),
    );
    figure(
        "a_thousand_readers_see_no_torn_read_and_no_mixed_snapshot_during_200_publishes",
        &[
            ("readers", format!("{}", FILE_READERS + HTTP_READERS)),
            ("file_readers", FILE_READERS.to_string()),
            ("output_on_tmpfs", mem.is_some().to_string()),
            ("http_readers", HTTP_READERS.to_string()),
            ("publishes", publishes.to_string()),
            ("seconds", format!("{:.1}", elapsed.as_secs_f64())),
            ("reads_checked", reads.to_string()),
            ("retried_after_swap", retries.to_string()),
            ("torn_reads", torn.to_string()),
            ("mixed_snapshots", mixed.to_string()),
        ],
    );
    assert!(errors.is_empty(), "{torn} torn, {mixed} mixed: {errors:#?}");
    assert!(publishes >= PUBLISHES, "{publishes} publishes");
    assert!(reads > 10_000, "only {reads} reads checked");
}

/// `sidecar_publish_total` from /metrics.
async fn publish_count(sc: &Sidecar) -> u64 {
    let (health, _) = listener_addrs(sc).await;
    let text = reqwest::get(format!("http://{health}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("sidecar_publish_total{result=\"success\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

// ---- interrupted publishes and restarts -----------------------------------------------------

/// One App Configuration store of this many keys rendered as files, about 10 KB each (the
/// service's limit), so that a publish takes a while (each file fsync'ed). A store's keys
/// change in one step and are read in one page: a poll never sees half a generation.
const BIG: usize = 150;

fn big_value(g: u64, i: usize) -> String {
    value("big", g, &format!("n{i:03}")).repeat(3)
}

fn set_big_generation(w: &World, g: u64) {
    let values: Vec<(String, String)> = (0..BIG).map(|i| (format!("n{i:03}"), big_value(g, i))).collect();
    let kvs: Vec<(&str, Option<&str>, &str)> = values.iter().map(|(k, v)| (k.as_str(), None, v.as_str())).collect();
    w.emu.set_kvs("big", &kvs, None).unwrap();
}

fn big_config(w: &World) -> PathBuf {
    w.emu.set_appconfig_page_size(1000);
    w.write_config(&format!(
        "{}sources:\n  - type: appconfig\n    endpoint: \"{}\"\n    format: files\n    path: big\n",
        w.base_config_at("1s", "info"),
        w.emu.store_url("big").unwrap()
    ))
}

/// The snapshot dirs (`..<digits>...`) in `out`.
fn snapshot_dirs(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() > 2 && n.starts_with("..") && n.as_bytes()[2].is_ascii_digit())
        .collect();
    v.sort();
    v
}

/// The one generation every file below `..data` holds, checking each value whole.
fn complete_generation(out: &Path) -> Result<u64, String> {
    let dir = out.join(std::fs::read_link(out.join("..data")).map_err(|e| format!("..data: {e}"))?);
    let mut gens = BTreeSet::new();
    for i in 0..BIG {
        let name = format!("n{i:03}");
        let bytes = std::fs::read(dir.join("big").join(&name)).map_err(|e| format!("{name}: {e}"))?;
        let text = String::from_utf8(bytes).map_err(|_| format!("{name}: not UTF-8"))?;
        let g: u64 = text.split('|').nth(1).and_then(|g| g.parse().ok()).ok_or(format!("{name}: no header"))?;
        if text != big_value(g, i) {
            return Err(format!("{name}: torn ({} bytes)", text.len()));
        }
        gens.insert(g);
    }
    match gens.len() {
        1 => Ok(gens.into_iter().next().unwrap()),
        _ => Err(format!("mixed generations {gens:?}")),
    }
}

/// Wait until a publish is under way: a snapshot dir that `..data` does not point to.
async fn publish_in_progress(out: &Path) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let current = std::fs::read_link(out.join("..data")).map(|p| p.display().to_string()).unwrap_or_default();
        if let Some(new) = snapshot_dirs(out).into_iter().find(|d| *d != current) {
            return new;
        }
        assert!(Instant::now() < deadline, "no publish started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_or_sigkill_in_the_middle_of_a_publish_leaves_one_complete_snapshot() {
    let w = appconfig_world(&["big"]).await;
    set_big_generation(&w, 1);
    let cfg = big_config(&w);
    let out = w.out();
    let mut sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("generation 1 published", LIMIT, || complete_generation(&out).ok().filter(|g| *g == 1)).await;

    // SIGTERM while generation 2 is being written: the publish is finished, then the exit.
    set_big_generation(&w, 2);
    let caught = publish_in_progress(&out).await;
    sc.signal("TERM");
    let term_at = Instant::now();
    assert_eq!(sc.wait_exit(Duration::from_secs(10)).code(), Some(0), "log:\n{}", sc.logs());
    let exit_after_term = term_at.elapsed();
    let after_term = complete_generation(&out);
    // The in-flight publish is finished unless it outlasts the 5 s bound (a slow disk under
    // load); then the exit goes ahead, ..data still names the previous complete snapshot and
    // the next start removes the half-written one.
    let grace_hit = sc.logs().contains("did not finish within");
    let dirs_after_term = snapshot_dirs(&out).len();
    assert!(
        dirs_after_term == 1 || (grace_hit && dirs_after_term == 2),
        "snapshot dirs after SIGTERM: {:?}",
        snapshot_dirs(&out)
    );
    assert!(!out.join("..data_tmp").exists());
    let g_term = after_term.expect("a complete snapshot after SIGTERM");

    // SIGKILL while generation 3 is being written: ..data still names a complete snapshot; the
    // half-written one is left for the next start to remove.
    let mut sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("running again", LIMIT, || sc.logs().contains("published").then_some(())).await;
    set_big_generation(&w, 3);
    let killed_in = publish_in_progress(&out).await;
    sc.child.kill().unwrap();
    sc.child.wait().unwrap();
    let g_kill = complete_generation(&out).expect("a complete snapshot after SIGKILL");
    let left = snapshot_dirs(&out);
    let restarted = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("generation 3 published after the restart", LIMIT, || complete_generation(&out).ok().filter(|g| *g == 3))
        .await;
    assert!(
        restarted.logs().contains("removed a snapshot left by an interrupted publish"),
        "log:\n{}",
        restarted.logs()
    );
    // The previous snapshot goes right after the swap.
    wait_for("one snapshot dir", LIMIT, || (snapshot_dirs(&out).len() == 1).then_some(())).await;
    drop(restarted);
    figure(
        "sigterm_or_sigkill_in_the_middle_of_a_publish_leaves_one_complete_snapshot",
        &[
            ("files_per_snapshot", BIG.to_string()),
            ("sigterm_during", caught),
            ("generation_after_sigterm", g_term.to_string()),
            ("exit_after_sigterm_ms", exit_after_term.as_millis().to_string()),
            ("publish_outlasted_the_5s_bound", grace_hit.to_string()),
            ("sigkill_during", killed_in),
            ("generation_after_sigkill", g_kill.to_string()),
            ("snapshot_dirs_after_sigkill", left.len().to_string()),
            ("snapshot_dirs_after_restart", "1".into()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_adopts_the_output_dir_cleans_leftovers_and_keeps_old_values_until_the_new_publish() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "v1-db").unwrap();
    w.emu.set_secret("main", "api-key", "v1-api").unwrap();
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n        path: db/password\n      - name: api-key\n",
        w.base_config("1s"),
        w.vault("main")
    ));
    let out = w.out();
    let mut sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("v1 published", LIMIT, || read(&out, "api-key").and(read(&out, "db/password"))).await;
    let first = std::fs::read_link(out.join("..data")).unwrap();
    sc.signal("TERM");
    assert_eq!(sc.wait_exit(Duration::from_secs(10)).code(), Some(0));

    // Unchanged values: the restart keeps the very same snapshot (no ..data swap to react to).
    let mut sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("the first poll after the restart", LIMIT, || sc.logs().contains("kept as they are").then_some(())).await;
    assert_eq!(std::fs::read_link(out.join("..data")).unwrap(), first, "adopted without a swap");
    sc.signal("TERM");
    assert_eq!(sc.wait_exit(Duration::from_secs(10)).code(), Some(0));

    // What interrupted publishes leave behind.
    let stale = out.join("..2020_01_01_00_00_00.000000000");
    std::fs::create_dir_all(stale.join("db")).unwrap();
    std::fs::write(stale.join("db/password"), "half-writ").unwrap();
    std::os::unix::fs::symlink("..2020_01_01_00_00_00.000000000", out.join("..data_tmp")).unwrap();
    std::os::unix::fs::symlink("..data/x", out.join("..link_tmp")).unwrap();
    std::fs::write(out.join(".sidecar-token.tmp-4242-deadbeef"), "half a token").unwrap();
    std::fs::write(out.join("app-owned.txt"), "not ours").unwrap();

    // The vault is down at the restart, and has new values meanwhile.
    w.emu.add_fault(Fault::status(503).on(Endpoint::KeyvaultGet));
    w.emu.set_secret("main", "db-password", "v2-db").unwrap();
    w.emu.set_secret("main", "api-key", "v2-api").unwrap();
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, serve) = listener_addrs(&sc).await;
    let watch = Watch::start(&out, &[("db/password", "v1-db"), ("api-key", "v1-api")], None);
    let n = w.emu.count(Endpoint::KeyvaultGet, None);
    assert!(w.emu.wait_for_count(Endpoint::KeyvaultGet, None, n + 8, LIMIT).await);
    let watched = watch.stop().await;
    assert!(watched.violations.is_empty(), "the old values stay through the outage: {:?}", watched.violations);
    assert!(!stale.exists(), "the stale snapshot was removed");
    for leftover in ["..data_tmp", "..link_tmp", ".sidecar-token.tmp-4242-deadbeef"] {
        assert!(std::fs::symlink_metadata(out.join(leftover)).is_err(), "{leftover} was removed");
    }
    assert_eq!(std::fs::read_to_string(out.join("app-owned.txt")).unwrap(), "not ours");
    // This process has published nothing yet: HTTP and readiness say so (SPEC: 503 until the
    // first publish); the files keep serving the app.
    let token = std::fs::read_to_string(out.join(".sidecar-token")).unwrap();
    let status = reqwest::Client::new()
        .get(format!("http://{serve}/v1/secrets/api-key"))
        .header("X-Sidecar-Token", token.trim())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 503);
    assert_eq!(http_status(&format!("http://{health}/readyz")).await, Some(503));

    w.emu.clear_faults();
    let ended = Instant::now();
    wait_for("v2 published", LIMIT, || {
        (read(&out, "db/password").as_deref() == Some("v2-db") && read(&out, "api-key").as_deref() == Some("v2-api"))
            .then_some(())
    })
    .await;
    let recover = ended.elapsed();
    eventually("ready", LIMIT, || async {
        (http_status(&format!("http://{health}/readyz")).await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(snapshot_dirs(&out).len(), 1);
    figure(
        "a_restart_adopts_the_output_dir_cleans_leftovers_and_keeps_old_values_until_the_new_publish",
        &[
            ("leftovers_removed", "4".into()),
            ("foreign_files_kept", "1".into()),
            ("checks_during_outage", watched.checks.to_string()),
            ("violations", "0".into()),
            ("recover_ms", recover.as_millis().to_string()),
        ],
    );
}
