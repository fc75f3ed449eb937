//! The output volume shared with another trust domain: entries planted by the app (or anything
//! else that can write the volume) are never followed, removed or replaced, and never stop a
//! start, a publish or a reload.

use crate::support;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(20);

fn config(w: &World, names: &[&str]) -> String {
    let list: String = names.iter().map(|n| format!("      - name: {n}\n")).collect();
    format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n{list}",
        w.base_config("1s"),
        w.vault("main")
    )
}

/// Replace `out/..data` with a link to `target` in one rename (as a hostile writer would).
fn plant_data_link(out: &Path, target: &str) {
    let _ = std::fs::remove_file(out.join("..planted"));
    symlink(target, out.join("..planted")).unwrap();
    std::fs::rename(out.join("..planted"), out.join("..data")).unwrap();
}

fn stamp_dirs(out: &Path) -> usize {
    std::fs::read_dir(out)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.len() == 31 && name.starts_with("..2")
        })
        .count()
}

async fn planted_data_link_deletes_nothing(target: &str) {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let victim = w.path("victim");
    std::fs::create_dir_all(victim.join("sub")).unwrap();
    std::fs::write(victim.join("sub/keep"), "the victim's").unwrap();
    let _sc = Sidecar::spawn(&w, &w.write_config(&config(&w, &["api-key"])), &[], &[]);
    let out = w.out();
    wait_for("first publish", LIMIT, || read(&out, "api-key").filter(|v| v == "k1")).await;

    std::fs::create_dir(out.join("..0")).unwrap();
    std::fs::write(out.join("notes.txt"), "the app's own").unwrap();
    plant_data_link(&out, target);
    w.emu.set_secret("main", "api-key", "k2").unwrap();
    wait_for("the next publish", LIMIT, || read(&out, "api-key").filter(|v| v == "k2")).await;

    assert_eq!(read(&victim, "sub/keep").as_deref(), Some("the victim's"), "..data -> {target} deleted the victim");
    assert!(out.join("..0").is_dir(), "..data -> {target}: the planted ..0 was removed");
    assert_eq!(read(&out, "notes.txt").as_deref(), Some("the app's own"), "..data -> {target}");
    // The snapshot the sidecar swapped in before is removed (not leaked).
    wait_for("one snapshot dir", LIMIT, || (stamp_dirs(&out) == 1).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_link_planted_to_outside_the_dir_leaves_the_victim_intact() {
    planted_data_link_deletes_nothing("..0/../../victim").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_link_planted_to_the_dir_itself_leaves_the_volume_intact() {
    planted_data_link_deletes_nothing("..0/..").await;
}

/// An emptyDir on tmpfs: root-owned, mode 1777. The app (uid 1000) made a `..1` with a file in
/// it, a fixed-name `..data_tmp`, its own file at a top-level name and a real directory at
/// another; the sidecar runs as 65532 and can remove none of them.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_entries_in_a_sticky_volume_stop_no_start_publish_or_reload() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to make entries of another uid");
        return;
    }
    let w = World::start(&["main"]).await;
    for (n, v) in [("api-key", "k1"), ("db-password", "d1"), ("other", "o1"), ("extra", "e1")] {
        w.emu.set_secret("main", n, v).unwrap();
    }
    let out = w.out();
    std::fs::create_dir_all(out.join("..1")).unwrap();
    std::fs::write(out.join("..1/x"), "app").unwrap();
    std::fs::write(out.join("..data_tmp"), "app").unwrap();
    std::fs::write(out.join("api-key"), "the app's own").unwrap();
    std::fs::create_dir(out.join("db-password")).unwrap();
    std::fs::write(out.join("db-password/keep"), "app").unwrap();
    for entry in ["..1", "..data_tmp", "api-key", "db-password"] {
        chown(&out.join(entry), 1000, 1000);
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let path = w.write_config(&config(&w, &["api-key", "db-password", "other"]));
    readable_by_all(&w);

    let mut sc = Sidecar::spawn_as(&w, &path, 65532, 65532);
    let started = wait_for("first publish or exit", LIMIT, || {
        if let Some(status) = sc.child.try_wait().unwrap() {
            return Some(Err(status));
        }
        read(&out, "other").map(Ok)
    })
    .await;
    assert_eq!(started, Ok("o1".to_string()), "log:\n{}", sc.logs());
    assert_eq!(read(&out, "..data/api-key").as_deref(), Some("k1"));
    assert_eq!(read(&out, "..data/db-password").as_deref(), Some("d1"));
    assert_eq!(read(&out, "api-key").as_deref(), Some("the app's own"));
    assert_eq!(read(&out, "db-password/keep").as_deref(), Some("app"));
    assert_eq!(read(&out, "..1/x").as_deref(), Some("app"));

    // Later publishes go through too, each removing the snapshot before it (the app's file at
    // `api-key` never fails one), and HTTP serves what the files hold.
    w.emu.set_secret("main", "other", "o2").unwrap();
    w.emu.set_secret("main", "api-key", "k2").unwrap();
    wait_for("the next publish", LIMIT, || read(&out, "..data/api-key").filter(|v| v == "k2")).await;
    wait_for("one snapshot dir", LIMIT, || (stamp_dirs(&out) == 1).then_some(())).await;
    let (_, serve) = listener_addrs(&sc).await;
    let token = std::fs::read_to_string(out.join(".sidecar-token")).unwrap();
    let served = reqwest::Client::new()
        .get(format!("http://{serve}/v1/secrets/api-key"))
        .header("X-Sidecar-Token", token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(served.text().await.unwrap(), "k2", "HTTP and files agree");

    let noted = |logs: &str| logs.lines().filter(|l| l.contains("entry=..1")).count();
    assert_eq!(noted(&sc.logs()), 1, "a foreign entry is logged once:\n{}", sc.logs());

    // And a reload is accepted and applied.
    std::fs::write(&path, config(&w, &["api-key", "db-password", "other", "extra"])).unwrap();
    wait_for("the reload applied", LIMIT, || read(&out, "extra")).await;
    let logs = sc.logs();
    assert!(!logs.contains("reload rejected"), "{logs}");
    assert_eq!(read(&out, "..1/x").as_deref(), Some("app"));
    assert_eq!(read(&out, "api-key").as_deref(), Some("the app's own"));
    assert_eq!(noted(&logs), 1, "the writer is kept across the reload; logged once:\n{logs}");
}

/// Publishes that fail (the volume turned unwritable for the sidecar): the last good files stay,
/// each failure is logged at error level and counted in `sidecar_publish_total{result}`, and the
/// next publish after the volume is writable again goes through.
#[tokio::test(flavor = "multi_thread")]
async fn failed_publishes_are_counted_and_logged_and_the_last_good_files_stay() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to run the sidecar as another uid");
        return;
    }
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let out = w.out();
    std::fs::create_dir_all(&out).unwrap();
    chown(&out, 65532, 65532);
    let path = w.write_config(&config(&w, &["api-key"]));
    readable_by_all(&w);
    let sc = Sidecar::spawn_as(&w, &path, 65532, 65532);
    wait_for("first publish", LIMIT, || read(&out, "api-key")).await;
    let (health, _) = listener_addrs(&sc).await;
    let failures = || async move {
        let text = reqwest::get(format!("http://{health}/metrics")).await.ok()?.text().await.ok()?;
        let line = text.lines().find(|l| l.starts_with("sidecar_publish_total{result=\"failure\"}"))?;
        line.rsplit(' ').next()?.parse::<f64>().ok()
    };

    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    w.emu.set_secret("main", "api-key", "k2").unwrap();
    eventually("two failed publishes counted", LIMIT, || async { failures().await.filter(|n| *n >= 2.0) }).await;
    assert_eq!(read(&out, "api-key").as_deref(), Some("k1"), "the last good files stay");
    let logs = sc.logs();
    assert!(logs.lines().any(|l| l.contains("ERROR") && l.contains("failed to publish")), "{logs}");

    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_for("published again", LIMIT, || read(&out, "api-key").filter(|v| v == "k2")).await;
    wait_for("no snapshot leaked by the failures", LIMIT, || (stamp_dirs(&out) == 1).then_some(())).await;
}

/// What the kubelet gives an emptyDir with `fsGroup: 2000`: root-owned, group 2000, setgid and
/// sticky (tmpfs). The sidecar runs as 65532 and the app as 1000, both in group 2000: the app
/// reads every published file, and everything below the volume belongs to group 2000.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_under_another_uid_in_fs_group_reads_every_file() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() || !have_setpriv() {
        eprintln!("SKIPPED: needs root and setpriv to run as other uids");
        return;
    }
    let w = World::start(&["main"]).await;
    for (n, v) in [("api-key", "k1"), ("db-password", "d1")] {
        w.emu.set_secret("main", n, v).unwrap();
    }
    let out = w.out();
    std::fs::create_dir_all(&out).unwrap();
    chown(&out, 0, 2000);
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o3777)).unwrap();
    let yaml = config(&w, &["api-key"]).replace(
        "      - name: api-key\n",
        "      - name: api-key\n      - name: db-password\n        path: db/password\n",
    );
    let path = w.write_config(&yaml);
    readable_by_all(&w);
    let sc = Sidecar::spawn_in_groups(&w, &path, 65532, 65532, &[2000]);
    wait_for("first publish", LIMIT, || read(&out, "db/password")).await;

    for (file, want) in [("api-key", "k1"), ("db/password", "d1"), (".sidecar-token", "")] {
        let cat = std::process::Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--groups=2000", "cat"])
            .arg(out.join(file))
            .output()
            .unwrap();
        assert!(
            cat.status.success(),
            "the app cannot read {file}: {}\n{}",
            String::from_utf8_lossy(&cat.stderr),
            sc.logs()
        );
        if !want.is_empty() {
            assert_eq!(String::from_utf8_lossy(&cat.stdout), want, "{file}");
        }
    }
    let data = out.join(std::fs::read_link(out.join("..data")).unwrap());
    let mut entries = vec![data.clone()];
    let mut i = 0;
    while i < entries.len() {
        let e = entries[i].clone();
        if e.is_dir() {
            assert_ne!(std::fs::metadata(&e).unwrap().mode() & 0o2000, 0, "{} lost the setgid bit", e.display());
            entries.extend(std::fs::read_dir(&e).unwrap().map(|d| d.unwrap().path()));
        }
        assert_eq!(std::fs::metadata(&e).unwrap().gid(), 2000, "{} is not in fsGroup", e.display());
        i += 1;
    }
    assert!(entries.len() >= 4, "{entries:?}");
}

/// A token file another uid planted before the sidecar wrote its own (the volume is writable
/// by every container) never becomes the token: in a plain dir it is replaced by a new one; in
/// a sticky dir, where it cannot be replaced, the start fails naming the file and its owner.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_planted_by_another_uid_never_becomes_the_token() {
    if !is_root() {
        println!("SKIPPED: needs root to make a file of another uid");
        return;
    }
    const PLANTED: &str = "planted-token-0123456789abcdef";
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let out = w.out();
    std::fs::create_dir_all(&out).unwrap();
    let token = out.join(".sidecar-token");
    std::fs::write(&token, PLANTED).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o444)).unwrap();
    chown(&token, 1000, 1000);

    // A plain dir, the sidecar as root: the planted file is replaced by a token of its own.
    let sc = Sidecar::spawn(&w, &w.write_config(&config(&w, &["api-key"])), &[], &[]);
    wait_for("first publish", LIMIT, || read(&out, "api-key")).await;
    let (_, serve) = listener_addrs(&sc).await;
    let get = |t: String| async move {
        reqwest::Client::new()
            .get(format!("http://{serve}/v1/secrets/api-key"))
            .header("X-Sidecar-Token", t)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get(PLANTED.into()).await, 401, "the planted token was taken:\n{}", sc.logs());
    let now = std::fs::read_to_string(&token).unwrap();
    assert_ne!(now, PLANTED);
    assert_eq!(get(now).await, 200);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::symlink_metadata(&token).unwrap().uid(), 0, "the token file is the sidecar's now");
    drop(sc);

    // A sticky dir, the sidecar as 65532: the foreign file cannot be replaced; the start fails.
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(&token, PLANTED).unwrap();
    chown(&token, 1000, 1000);
    readable_by_all(&w);
    let mut sc = Sidecar::spawn_as(&w, &w.write_config(&config(&w, &["api-key"])), 65532, 65532);
    let status = sc.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(1), "{}", sc.logs());
    let logs = sc.logs();
    assert!(logs.contains(".sidecar-token") && logs.contains("uid 1000"), "names the file and its owner:\n{logs}");
    assert!(!logs.contains(PLANTED), "{logs}");
    assert!(read(&out, "api-key").is_none(), "nothing served or published with a foreign token");
}

/// A symlink or a FIFO another container put at `.sidecar-token` (in a plain volume anyone may
/// replace the sidecar's own token file while the sidecar restarts) is not read and does not
/// stop the start: like a planted file, it is replaced by a token of the sidecar's own.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_or_fifo_planted_at_the_token_file_is_replaced_not_fatal() {
    if !is_root() {
        println!("SKIPPED: needs root to make entries of another uid");
        return;
    }
    const PLANTED: &str = "planted-token-0123456789abcdef";
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    for kind in ["symlink", "fifo"] {
        let out = w.out();
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let token = out.join(".sidecar-token");
        let bait = w.tmp.path().join("bait");
        std::fs::write(&bait, PLANTED).unwrap();
        match kind {
            "symlink" => symlink(&bait, &token).unwrap(),
            _ => assert!(std::process::Command::new("mkfifo").arg(&token).status().unwrap().success()),
        }
        let ok = std::process::Command::new("chown").arg("-h").arg("1000:1000").arg(&token).status().unwrap();
        assert!(ok.success());
        let mut sc = Sidecar::spawn(&w, &w.write_config(&config(&w, &["api-key"])), &[], &[]);
        let deadline = std::time::Instant::now() + LIMIT;
        while read(&out, "api-key").is_none() {
            let exited = sc.child.try_wait().unwrap();
            if std::time::Instant::now() > deadline || exited.is_some() {
                panic!("{kind}: no publish (exit {exited:?}); the log:\n{}", sc.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let meta = std::fs::symlink_metadata(&token).unwrap();
        assert!(meta.is_file(), "{kind}: the token file is still the planted entry");
        let now = std::fs::read_to_string(&token).unwrap();
        assert_ne!(now.trim(), PLANTED, "{kind}: the planted target became the token");
        let (_, serve) = listener_addrs(&sc).await;
        // HTTP serves a publish a moment after its swap: wait for it, with the new token.
        let url = format!("http://{serve}/v1/secrets/api-key");
        eventually("200 with the sidecar's token", LIMIT, || {
            let (url, token) = (url.clone(), now.trim().to_string());
            async move {
                let resp = reqwest::Client::new().get(url).header("X-Sidecar-Token", token).send().await.ok()?;
                (resp.status() == 200).then_some(())
            }
        })
        .await;
        assert_eq!(std::fs::read_to_string(&bait).unwrap(), PLANTED, "{kind}: the link's target untouched");
    }
}

/// A `..data` link of another uid in a sticky volume cannot be replaced by anyone but its owner
/// (or root): every publish fails. What holds: the cause is logged once at error level at the
/// start (owner, sticky bit, what to do), every failed publish is counted in
/// `sidecar_publish_total{result="failure"}`, the listeners keep answering, no snapshot leaks.
#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_data_link_in_a_sticky_volume_is_named_at_start_and_failures_are_counted() {
    if !is_root() {
        println!("SKIPPED: needs root to make entries of another uid");
        return;
    }
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let out = w.out();
    std::fs::create_dir_all(&out).unwrap();
    symlink("..2020_01_01_00_00_00.000000000", out.join("..data")).unwrap();
    let ok = std::process::Command::new("chown").args(["-h", "1000:1000"]).arg(out.join("..data")).status().unwrap();
    assert!(ok.success());
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).unwrap();
    readable_by_all(&w);
    let sc = Sidecar::spawn_as(&w, &w.write_config(&config(&w, &["api-key"])), 65532, 65532);
    let (health, _) = listener_addrs(&sc).await;
    let failures = || async {
        let body = reqwest::get(format!("http://{health}/metrics")).await.ok()?.text().await.ok()?;
        let line = body.lines().find(|l| l.starts_with("sidecar_publish_total{result=\"failure\"}"))?;
        line.rsplit(' ').next()?.parse::<f64>().ok()
    };
    eventually("two failed publishes counted", LIMIT, || async { failures().await.filter(|n| *n >= 2.0) }).await;
    assert_eq!(http_status(&format!("http://{health}/healthz")).await, Some(200), "health keeps answering");
    let logs = sc.logs();
    let named: Vec<&str> =
        logs.lines().filter(|l| l.contains("ERROR") && l.contains("..data") && l.contains("uid 1000")).collect();
    assert_eq!(named.len(), 1, "the cause logged once at error level:\n{logs}");
    assert!(named[0].contains("sticky") && named[0].contains("remove"), "says why and what to do: {}", named[0]);
    assert!(!sc.child_exited(), "still running");
    // A publish retried meanwhile has its snapshot dir until its swap fails: wait for it to go.
    eventually("no snapshot leaks", LIMIT, || async { (stamp_dirs(&out) == 0).then_some(()) }).await;
}

/// A full volume (ENOSPC in the middle of a publish): the last good files stay as they were,
/// the half-written snapshot is removed (no space kept by it), the failure is counted, and
/// once the value fits again it is published.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_volume_keeps_the_last_good_files_and_recovers() {
    if !is_root() {
        println!("SKIPPED: needs root to mount a small tmpfs");
        return;
    }
    let w = World::start(&["main"]).await;
    let mnt = w.tmp.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted =
        std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=24k", "tmpfs"]).arg(&mnt).status();
    if !mounted.is_ok_and(|s| s.success()) {
        println!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let out = mnt.join("out");
    w.emu.set_secret("main", "a", "small-1").unwrap();
    w.emu.set_secret("main", "b", "b-1").unwrap();
    let yaml = config(&w, &["a", "b"]).replace(&w.out().display().to_string(), &out.display().to_string());
    let sc = Sidecar::spawn(&w, &w.write_config(&yaml), &[], &[]);
    wait_for("first publish", LIMIT, || read(&out, "b")).await;
    let (health, _) = listener_addrs(&sc).await;

    // 20 KB (Key Vault takes up to 25 KB) does not fit beside the old snapshot, which stays
    // until the swap.
    let big = "x".repeat(20 * 1024);
    w.emu.set_secret("main", "a", &big).unwrap();
    w.emu.set_secret("main", "b", "b-2").unwrap();
    let failures = || async {
        let text = reqwest::get(format!("http://{health}/metrics")).await.ok()?.text().await.ok()?;
        let n = text
            .lines()
            .find(|l| l.starts_with("sidecar_publish_total{result=\"failure\"}"))?
            .rsplit(' ')
            .next()?
            .parse::<f64>()
            .ok()?;
        (n >= 2.0).then_some(())
    };
    eventually("two failed publishes counted", LIMIT, failures).await;
    assert_eq!(read(&out, "a").as_deref(), Some("small-1"), "{}", sc.logs());
    assert_eq!(read(&out, "b").as_deref(), Some("b-1"), "the last good set stays whole");
    assert_eq!(stamp_dirs(&out), 1, "a half-written snapshot was left:\n{}", sc.logs());
    assert!(sc.logs().contains("No space left on device"), "{}", sc.logs());

    w.emu.set_secret("main", "a", "small-3").unwrap();
    wait_for("the publish after space came back", LIMIT, || read(&out, "a").filter(|v| v == "small-3")).await;
    assert_eq!(read(&out, "b").as_deref(), Some("b-2"));
    assert_eq!(stamp_dirs(&out), 1);
}
