//! Shutdown against the real binary (SPEC: SIGTERM/SIGINT let an in-flight publish finish
//! within 5 s, exit 0; a second signal exits at once). What holds a shutdown up is file-system
//! work (a publish, a reload's new `output.dir`), so these tests slow exactly one syscall on one
//! path with strace's delay injection, attached to the running sidecar after its first
//! publish (SKIPPED without strace or ptrace).

use crate::support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const LIMIT: Duration = Duration::from_secs(20);
/// The calls that look at a path's metadata.
pub const STAT: &str = "stat,lstat,newfstatat,statx";

/// strace attached to a running sidecar, delaying `syscalls` on `path` by `delay`.
pub struct Delay {
    child: Child,
}

impl Delay {
    /// `None` when strace cannot attach here (no strace, no ptrace).
    pub async fn attach(world: &World, pid: u32, path: &Path, syscalls: &str, delay: Duration) -> Option<Delay> {
        let log = world.path(&format!("strace-{}.log", fastrand::u32(..)));
        // -P matches the path given (a symlink would be resolved first: so a directory).
        let child = Command::new("strace")
            .args(["-f", "-p", &pid.to_string()])
            .arg("-P")
            .arg(path)
            .args(["-o", "/dev/null", "-e", &format!("trace={syscalls}")])
            .arg("-e")
            .arg(format!("inject={syscalls}:delay_enter={}", delay.as_micros()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .ok()?;
        let mut delay = Delay { child };
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("attached") {
                return Some(delay);
            }
            if delay.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                println!("SKIPPED: strace cannot attach: {text}");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn have_strace() -> bool {
    let ok = Command::new("strace").arg("-V").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        println!("SKIPPED: no strace");
    }
    ok
}

fn config(w: &World) -> String {
    format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: a\n",
        w.base_config("1s"),
        w.vault("main")
    )
}

/// The sidecar with `a = v1` published.
async fn started(w: &World) -> Sidecar {
    w.emu.set_secret("main", "a", "v1").unwrap();
    std::fs::create_dir_all(w.out()).unwrap();
    let path = w.write_config(&config(w));
    let sc = Sidecar::spawn(w, &path, &[], &[]);
    wait_for("first publish", LIMIT, || read(&w.out(), "a").filter(|v| v == "v1")).await;
    sc
}

/// Wait until the process has exited by `deadline`: its main thread is gone (strace holds the
/// thread it delays until it is detached, so the exit status comes after `drop(Delay)`).
async fn wait_gone(sc: &Sidecar, deadline: Instant, what: &str) {
    let from = Instant::now();
    while !sc.child_exited() {
        assert!(Instant::now() < deadline, "{what}: still running after {:?}:\n{}", from.elapsed(), sc.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{what}: exited {:?} after the signal", from.elapsed());
}

fn count(sc: &Sidecar, what: &str) -> usize {
    sc.logs().matches(what).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once_while_a_publish_holds_the_shutdown() {
    if !have_strace() {
        return;
    }
    for second in ["TERM", "INT"] {
        let w = World::start(&["main"]).await;
        let mut sc = started(&w).await;
        // The next publish hangs at its start (its look at output.dir).
        let Some(delay) = Delay::attach(&w, sc.child.id(), &w.out(), STAT, Duration::from_secs(60)).await else {
            return;
        };
        w.emu.set_secret("main", "a", "v2").unwrap();
        wait_for("the update (a publish starts)", LIMIT, || (count(&sc, " updated ") == 1).then_some(())).await;
        sc.signal("TERM");
        wait_for("stopping", LIMIT, || sc.logs().contains("stopping").then_some(())).await;
        let at = Instant::now();
        sc.signal(second);
        wait_gone(&sc, at + Duration::from_millis(2500), &format!("SIG{second} after SIGTERM")).await;
        drop(delay);
        let status = sc.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{status:?}");
        assert_eq!(read(&w.out(), "a").as_deref(), Some("v1"), "the previous snapshot stays");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_reload_exits_within_the_bound() {
    if !have_strace() {
        return;
    }
    let w = World::start(&["main"]).await;
    let mut sc = started(&w).await;
    // A reload to a new output.dir, whose creation hangs.
    let out2 = w.path("out2");
    let Some(delay) = Delay::attach(&w, sc.child.id(), &out2, "mkdir,mkdirat", Duration::from_secs(60)).await else {
        return;
    };
    let edited =
        config(&w).replace(&format!("dir: \"{}\"", w.out().display()), &format!("dir: \"{}\"", out2.display()));
    assert_ne!(edited, config(&w));
    std::fs::write(w.path("config.yaml"), edited).unwrap();
    wait_for("the reload under way", LIMIT, || sc.logs().contains("config changed; applying it").then_some(())).await;
    let at = Instant::now();
    sc.signal("TERM");
    wait_gone(&sc, at + Duration::from_millis(5500), "SIGTERM during a reload").await;
    drop(delay);
    let status = sc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "SPEC: exit 0 on SIGTERM:\n{}", sc.logs());
    assert_eq!(read(&w.out(), "a").as_deref(), Some("v1"), "the files stay");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_publish_starts_after_sigterm_even_with_a_new_value_waiting() {
    if !have_strace() {
        return;
    }
    let w = World::start(&["main"]).await;
    let mut sc = started(&w).await;
    // The next publish takes a second at each of its looks at output.dir (within the 5 s bound).
    let Some(_delay) = Delay::attach(&w, sc.child.id(), &w.out(), STAT, Duration::from_secs(1)).await else {
        return;
    };
    w.emu.set_secret("main", "a", "v2").unwrap();
    wait_for("the update (a publish starts)", LIMIT, || (count(&sc, " updated ") == 1).then_some(())).await;
    // A newer value, polled while that publish runs: its report waits for the publisher.
    let polls = count(&sc, "next poll scheduled");
    w.emu.set_secret("main", "a", "v3").unwrap();
    wait_for("the poll that read v3", LIMIT, || (count(&sc, "next poll scheduled") > polls).then_some(())).await;
    assert_eq!(read(&w.out(), "a").as_deref(), Some("v1"), "the signal must come while the v2 publish runs");
    sc.signal("TERM");
    let status = sc.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    let logs = sc.logs();
    let after = &logs[logs.find("stopping").expect("stopping logged")..];
    assert!(!after.contains(" published objects="), "a publish after SIGTERM:\n{logs}");
    assert_ne!(read(&w.out(), "a").as_deref(), Some("v3"), "v3 was published after SIGTERM:\n{logs}");
}

/// An edit that lands while a reload is under way (here: its new output.dir's creation hangs)
/// is applied after it, not dropped: the reload ran on the text it read before the edit.
#[tokio::test(flavor = "multi_thread")]
async fn an_edit_during_a_reload_is_applied_after_it() {
    if !have_strace() {
        return;
    }
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "a", "v1").unwrap();
    w.emu.set_secret("main", "b", "b1").unwrap();
    // The config alone in its directory: no other file's events (the sidecar's log) reload it.
    let dir = w.path("cfg");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, config(&w)).unwrap();
    let sc = Sidecar::spawn(&w, &path, &[], &[]);
    wait_for("first publish", LIMIT, || read(&w.out(), "a").filter(|v| v == "v1")).await;
    let out2 = w.path("out2");
    let Some(delay) = Delay::attach(&w, sc.child.id(), &out2, "mkdir,mkdirat", Duration::from_secs(3)).await else {
        return;
    };
    let moved = config(&w).replace(&format!("dir: \"{}\"", w.out().display()), &format!("dir: \"{}\"", out2.display()));
    assert_ne!(moved, config(&w));
    std::fs::write(&path, &moved).unwrap();
    wait_for("the reload under way", LIMIT, || sc.logs().contains("config changed; applying it").then_some(())).await;
    std::fs::write(&path, format!("{moved}      - name: b\n")).unwrap();
    wait_for("b published after the reload", LIMIT, || read(&out2, "b").filter(|v| v == "b1")).await;
    drop(delay);
    assert_eq!(read(&out2, "a").as_deref(), Some("v1"), "{}", sc.logs());
}
