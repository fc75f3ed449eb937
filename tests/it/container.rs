//! Container tests: the scratch image run the way a pod runs it. On a private Docker network
//! with no route off the machine (`--internal`), three containers: the emulator (a development
//! build of the sidecar in the app image, `emulator` subcommand, TLS with its per-run CA), the sidecar (`--read-only --user
//! 65532 --cap-drop ALL`) and a minimal app (static busybox, FROM scratch) that mounts the
//! sidecar's output volume read-only. The app sees the files, a change made through the
//! emulator's control API reaches them, and `docker stop` ends the sidecar with exit 0 within
//! 5 s, leaving the files in place.
//!
//! Images: `CONTAINER_TEST_SIDECAR_IMAGE` and `CONTAINER_TEST_APP_IMAGE` name them (not
//! `SIDECAR_*`: the sidecar reads those as config); `scripts/test.sh` builds both
//! (scripts/build-image.sh, scripts/build-test-app-image.sh) and sets them. Without a Docker
//! engine, or without the images named, each test prints one `SKIPPED: ...` line and passes.
//! Every container, volume and network has a per-run name and is removed on the way out,
//! failed or not.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_IMAGE_BYTES: u64 = 4 * 1024 * 1024;
/// How long starting containers and the first sync may take on a loaded CI machine.
const START_LIMIT: Duration = Duration::from_secs(90);
/// The shutdown bound of SPEC.md (SIGTERM to exit).
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// The flags every container of these tests runs with, as in the pod's securityContext.
const HARDENED: [&str; 7] =
    ["--read-only", "--user", "65532", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"];

// ---- images, or why the tests are skipped ----------------------------------------------------

struct Images {
    sidecar: String,
    app: String,
}

/// The images to test, or `None` after printing why the test is skipped. A test runner
/// captures `println!`; the line goes to the real stderr so it is seen.
fn images(test: &str) -> Option<Images> {
    let skip = |why: String| {
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
        None
    };
    match Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output() {
        Err(e) => return skip(format!("no docker command ({e}); the container tests need a Docker engine")),
        Ok(out) if !out.status.success() => {
            let why = String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or_default().to_owned();
            return skip(format!("no Docker engine answers (docker info: {why})"));
        }
        Ok(_) => {}
    }
    let Ok(sidecar) = std::env::var("CONTAINER_TEST_SIDECAR_IMAGE") else {
        return skip(
            "CONTAINER_TEST_SIDECAR_IMAGE is not set; scripts/test.sh builds the images and sets it (or run \
             scripts/build-image.sh TAG and scripts/build-test-app-image.sh TAG2, then set \
             CONTAINER_TEST_SIDECAR_IMAGE=TAG CONTAINER_TEST_APP_IMAGE=TAG2)"
                .to_owned(),
        );
    };
    let app = std::env::var("CONTAINER_TEST_APP_IMAGE")
        .expect("CONTAINER_TEST_APP_IMAGE is not set (scripts/build-test-app-image.sh TAG builds the app image)");
    for image in [&sidecar, &app] {
        let out = docker(&["image", "inspect", "-f", "{{.Id}}", image]);
        assert!(out.status.success(), "image {image} does not exist: {}", String::from_utf8_lossy(&out.stderr));
    }
    Some(Images { sidecar, app })
}

// ---- docker ----------------------------------------------------------------------------------

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("docker runs")
}

/// Run docker; panic with its stderr if it fails; return its stdout, trimmed.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn inspect(object: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, object])
}

/// Poll `cond` until it gives `Some` or `limit` passes (each probe is itself a docker call of
/// some hundred milliseconds; the pause between probes only keeps the loop from spinning).
fn wait_for<T>(what: &str, limit: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything a test created, removed when it goes out of scope (also when the test fails;
/// then the containers' logs are printed first).
struct Cleanup {
    prefix: String,
    containers: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl Cleanup {
    fn new() -> Cleanup {
        let prefix = format!("ass-test-{}-{:08x}", std::process::id(), fastrand::u32(..));
        Cleanup { prefix, containers: Vec::new(), volumes: Vec::new(), networks: Vec::new() }
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    fn network(&mut self, what: &str) -> String {
        let name = self.name(what);
        self.networks.push(name.clone());
        docker_ok(&["network", "create", "--internal", &name]);
        name
    }

    fn volume(&mut self, what: &str) -> String {
        let name = self.name(what);
        self.volumes.push(name.clone());
        docker_ok(&["volume", "create", &name]);
        name
    }

    /// `docker run -d --name <prefix>-<what> <args>`; returns the container name.
    fn run(&mut self, what: &str, args: &[&str]) -> String {
        let name = self.name(what);
        self.containers.push(name.clone());
        let mut all = vec!["run", "-d", "--name", &name];
        all.extend_from_slice(args);
        docker_ok(&all);
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for c in &self.containers {
                let out = docker(&["logs", "--tail", "60", c]);
                eprintln!(
                    "---- docker logs {c} ----\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

/// A file readable by the containers' non-root user.
fn write_shared(dir: &Path, name: &str, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// What the app reads: `cat` in the app container; `None` if it cannot.
fn app_read(app: &str, path: &str) -> Option<String> {
    let out = docker(&["exec", app, "/bin/busybox", "cat", path]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A request to the emulator's control API, sent from inside the private network by the app
/// container's `nc` (the host has no route into an internal network). Returns the response.
fn control_request(app: &str, port: &str, method: &str, path: &str, body: &str) -> String {
    let request = format!(
        "{method} /_emulator{path} HTTP/1.1\r\nHost: emulator\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut child = Command::new("docker")
        .args(["exec", "-i", app, "/bin/busybox", "nc", "emulator", port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker exec runs");
    // Stdin stays open until the answer is in: busybox nc may quit on stdin's end before the
    // server has answered. The server closes the connection after answering (`Connection:
    // close`), which ends nc and its stdout.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut response = String::new();
        let _ = stdout.read_to_string(&mut response);
        let _ = tx.send(response);
    });
    let response = rx.recv_timeout(Duration::from_secs(30));
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    response.unwrap_or_else(|_| panic!("the control request {method} {path} got no answer within 30 s"))
}

/// Docker's RFC 3339 UTC timestamps (`2026-11-23T11:48:20.173609123Z`).
fn parse_docker_time(text: &str) -> SystemTime {
    try_parse_docker_time(text).unwrap_or_else(|| panic!("unexpected docker timestamp {text:?}"))
}

fn try_parse_docker_time(text: &str) -> Option<SystemTime> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date.split('-').map(str::parse).collect::<Result<_, _>>().ok()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms.split(':').map(str::parse).collect::<Result<_, _>>().ok()?;
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(UNIX_EPOCH + Duration::new(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2], nanos))
}

#[test]
fn docker_timestamps_parse() {
    let t = parse_docker_time("2026-11-23T11:48:20.173609123Z");
    assert_eq!(t.duration_since(UNIX_EPOCH).unwrap(), Duration::new(1_795_434_500, 173_609_123));
    assert_eq!(parse_docker_time("1970-01-01T00:00:01Z"), UNIX_EPOCH + Duration::from_secs(1));
    let leap = parse_docker_time("2000-03-01T00:00:00.5Z").duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(leap, Duration::new(951_868_800, 500_000_000));
    assert!(try_parse_docker_time("2026-11-23 11:48:20").is_none());
}

// ---- the tests -------------------------------------------------------------------------------

#[test]
fn container_pod_shares_files_propagates_a_change_and_stops_cleanly() {
    let Some(images) = images("container_pod_shares_files_propagates_a_change_and_stops_cleanly") else { return };
    let mut pod = Cleanup::new();
    let host_dir = tempfile::tempdir().unwrap();
    let (seed_dir, config_dir) = (host_dir.path().join("seed"), host_dir.path().join("config"));
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::create_dir_all(&config_dir).unwrap();

    let tag = format!("{:08x}", fastrand::u32(..));
    let (password_1, password_2, api_key) =
        (format!("pw-one-{tag}-canary"), format!("pw-two-{tag}-canary"), format!("api-key-{tag}-canary"));
    write_shared(
        &seed_dir,
        "seed.json",
        &serde_json::json!({"demo": {"db-password": password_1, "api-key": api_key}}).to_string(),
    );

    // The pod's network, with no route off the machine, and its volumes: the emulator's state
    // (CA, federated token; read-only in the sidecar) and the shared output (the emptyDir).
    let network = pod.network("net");
    let emulator_state = pod.volume("emulator-state");
    let secrets = pod.volume("secrets");
    assert_eq!(inspect(&network, "{{.Internal}}"), "true", "the network must be --internal");

    // The emulator: the app image's `azure-emulator` (the production image has no emulator),
    // listening on the network under the host name `emulator` (in its
    // certificate), its state in a volume mounted where the image's 65532-owned directory gives
    // the volume that owner.
    let seed_mount = format!("{}:/seed:ro", seed_dir.display());
    let state_mount = format!("{emulator_state}:/emulator-state");
    let mut args = vec!["--network", &network, "--network-alias", "emulator"];
    args.extend_from_slice(&HARDENED);
    args.extend_from_slice(&["--entrypoint", "/azure-emulator"]);
    args.extend_from_slice(&["-v", &state_mount, "-v", &seed_mount, &images.app]);
    args.extend_from_slice(&["--bind", "0.0.0.0", "--advertise-host", "emulator"]);
    args.extend_from_slice(&["--state-dir", "/emulator-state", "--seed", "/seed/seed.json"]);
    let emulator = pod.run("emulator", &args);
    let info: serde_json::Value = wait_for("the emulator's address line", START_LIMIT, || {
        let out = docker(&["logs", &emulator]);
        let line = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with('{')).map(str::to_owned);
        if line.is_none() && inspect(&emulator, "{{.State.Running}}") != "true" {
            panic!("the emulator exited: {}", String::from_utf8_lossy(&out.stderr));
        }
        line.map(|l| serde_json::from_str(&l).expect("the address line is JSON"))
    });
    let field = |k: &str| info[k].as_str().unwrap_or_else(|| panic!("{k} in {info}")).to_owned();
    let vault = info["vaults"]["demo"].as_str().expect("vault demo").to_owned();
    assert!(vault.starts_with("https://emulator:"), "{vault}");
    let control_port = field("imds_url").rsplit(':').next().unwrap().to_owned();

    // The sidecar's config, as a ConfigMap would mount it: workload identity against the
    // emulator's authority, its CA as tls.ca_file, every endpoint on the emulator's host name.
    let config = [
        "identity:".to_owned(),
        "  mode: workload".to_owned(),
        format!("  client_id: \"{}\"", field("client_id")),
        format!("  tenant_id: \"{}\"", field("tenant_id")),
        "  federated_token_file: /emulator/federated-token".to_owned(),
        format!("  authority_host: \"{}\"", field("authority_url")),
        "tls:\n  ca_file: /emulator/ca.pem".to_owned(),
        "sync:\n  interval: 1s\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s".to_owned(),
        "sources:".to_owned(),
        format!("  - type: keyvault\n    vault: \"{vault}\""),
        "    secrets:\n      - name: db-password\n        path: db/password\n      - name: api-key".to_owned(),
        "log:\n  level: debug\n".to_owned(),
    ]
    .join("\n");
    write_shared(&config_dir, "config.yaml", &config);

    // The sidecar, hardened as in the pod; its default command `run` and config path.
    let emulator_mount = format!("{emulator_state}:/emulator:ro");
    let secrets_mount = format!("{secrets}:/secrets");
    let config_mount = format!("{}:/etc/azure-secrets-sidecar:ro", config_dir.display());
    let mut args = vec!["--network", network.as_str()];
    args.extend_from_slice(&HARDENED);
    args.extend_from_slice(&["-v", &emulator_mount, "-v", &secrets_mount, "-v", &config_mount, &images.sidecar]);
    let sidecar = pod.run("sidecar", &args);

    // Like the native sidecar's startupProbe: the app starts once `probe ready` passes.
    wait_for("the sidecar's `probe ready`", START_LIMIT, || {
        if inspect(&sidecar, "{{.State.Running}}") != "true" {
            panic!("the sidecar exited with {}", inspect(&sidecar, "{{.State.ExitCode}}"));
        }
        docker(&["exec", &sidecar, "/azure-secrets-sidecar", "probe", "ready"]).status.success().then_some(())
    });

    // It runs as asked: read-only root, numeric non-root user, no capabilities, one network.
    assert_eq!(inspect(&sidecar, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect(&sidecar, "{{.Config.User}}"), "65532");
    assert_eq!(inspect(&sidecar, "{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
    assert_eq!(inspect(&sidecar, "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"), network);
    let top = docker_ok(&["top", &sidecar, "-o", "pid,uid"]);
    assert_eq!(top.lines().nth(1).and_then(|l| l.split_whitespace().nth(1)), Some("65532"), "docker top: {top}");
    // Where the engine shares this machine's process namespace, the kernel's own view too.
    let pid = inspect(&sidecar, "{{.State.Pid}}");
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        if status.contains("azure-secrets") {
            let line = |k: &str| status.lines().find(|l| l.starts_with(k)).unwrap_or_default().to_owned();
            assert!(line("Uid:").split_whitespace().skip(1).all(|id| id == "65532"), "{}", line("Uid:"));
            assert_eq!(line("CapEff:").split_whitespace().nth(1), Some("0000000000000000"));
            assert_eq!(line("NoNewPrivs:").split_whitespace().nth(1), Some("1"));
            let (uid, caps, nnp) = (line("Uid:"), line("CapEff:"), line("NoNewPrivs:"));
            let _ = writeln!(std::io::stderr(), "container test: sidecar process {pid}: {uid}, {caps}, {nnp}");
        }
    }

    // The app: the shared volume read-only, like the app container of the pod.
    let app_mount = format!("{secrets}:/secrets:ro");
    let mut args = vec!["--network", network.as_str()];
    args.extend_from_slice(&HARDENED);
    args.extend_from_slice(&["-v", &app_mount, &images.app]);
    let app = pod.run("app", &args);
    assert_eq!(inspect(&app, "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"), network);

    // The app sees the files.
    let read = wait_for("the app to read db/password", START_LIMIT, || app_read(&app, "/secrets/db/password"));
    assert_eq!(read, password_1);
    assert_eq!(app_read(&app, "/secrets/api-key").as_deref(), Some(api_key.as_str()));
    let snapshot_1 = docker_ok(&["exec", &app, "/bin/busybox", "readlink", "/secrets/..data"]);

    // A change in the vault reaches the app's file.
    let body = format!(r#"{{"value":"{password_2}"}}"#);
    let response = control_request(&app, &control_port, "PUT", "/vaults/demo/secrets/db-password", &body);
    assert!(response.starts_with("HTTP/1.1 200"), "control API: {response}");
    wait_for("the new db/password in the app", Duration::from_secs(60), || {
        (app_read(&app, "/secrets/db/password").as_deref() == Some(password_2.as_str())).then_some(())
    });
    let snapshot_2 = docker_ok(&["exec", &app, "/bin/busybox", "readlink", "/secrets/..data"]);
    assert_ne!(snapshot_1, snapshot_2, "a change publishes a new snapshot");

    // `docker stop`: SIGTERM, exit 0 within the 5 s bound (with -t 5 a sidecar that hung would
    // be killed and exit 137), files kept for the app that is still running.
    let sent = SystemTime::now();
    let started = Instant::now();
    docker_ok(&["stop", "-t", "5", &sidecar]);
    let stop_wall = started.elapsed();
    let state = inspect(&sidecar, "{{.State.Status}} {{.State.ExitCode}} {{.State.FinishedAt}}");
    let parts: Vec<&str> = state.split(' ').collect();
    let exited_after = parse_docker_time(parts[2]).duration_since(sent).unwrap_or_default();
    let _ = writeln!(
        std::io::stderr(),
        "container test: docker stop on the sidecar: exit code {}, process gone {:.3} s after the stop \
         was sent, docker stop returned after {:.3} s",
        parts[1],
        exited_after.as_secs_f64(),
        stop_wall.as_secs_f64()
    );
    assert_eq!((parts[0], parts[1]), ("exited", "0"), "the sidecar must exit 0 on docker stop: {state}");
    assert!(exited_after < STOP_LIMIT, "the sidecar took {exited_after:?} to exit after docker stop");
    assert!(stop_wall < STOP_LIMIT, "docker stop took {stop_wall:?}");
    assert_eq!(app_read(&app, "/secrets/db/password").as_deref(), Some(password_2.as_str()), "files kept after stop");
    assert_eq!(app_read(&app, "/secrets/api-key").as_deref(), Some(api_key.as_str()), "files kept after stop");

    // Nothing secret in the sidecar's logs.
    let logs = docker(&["logs", &sidecar]);
    let logs = format!("{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr));
    assert!(logs.contains("published"), "the sidecar logged its publishes:\n{logs}");
    for value in [&password_1, &password_2, &api_key] {
        assert!(!logs.contains(value.as_str()), "a secret value is in the sidecar's logs:\n{logs}");
    }
}

#[test]
fn container_image_is_small_static_non_root_and_has_no_shell() {
    let Some(images) = images("container_image_is_small_static_non_root_and_has_no_shell") else { return };
    let mut cleanup = Cleanup::new();
    let image = images.sidecar.as_str();

    let size: u64 = inspect(image, "{{.Size}}").parse().unwrap();
    let mib = size as f64 / 1048576.0;
    let _ = writeln!(std::io::stderr(), "container test: image {image} is {size} bytes ({mib:.2} MiB)");
    assert!(size <= MAX_IMAGE_BYTES, "image {image} is {size} bytes, over 4 MiB");
    assert_eq!(inspect(image, "{{.Config.User}}"), "65532:65532");
    assert_eq!(inspect(image, "{{json .Config.Entrypoint}}"), r#"["/azure-secrets-sidecar"]"#);

    // The whole filesystem: the binary and the empty output directory; the rest is what the
    // engine adds to every container (mount points, resolv.conf, hosts).
    let container = cleanup.name("fs");
    cleanup.containers.push(container.clone());
    docker_ok(&["create", "--name", &container, image]);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("fs.tar");
    docker_ok(&["export", "-o", tar.to_str().unwrap(), &container]);
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().expect("tar runs");
    let engine_added =
        [".dockerenv", "dev/", "proc/", "sys/", "etc/", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"];
    let mut own: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|e| {
            !engine_added.contains(e) && !e.starts_with("dev/") && !e.starts_with("proc/") && !e.starts_with("sys/")
        })
        .map(str::to_owned)
        .collect();
    own.sort();
    assert_eq!(own, ["azure-secrets-sidecar", "secrets/"], "the image holds only the binary and /secrets");

    // And so no shell to run.
    let shell = cleanup.name("shell");
    cleanup.containers.push(shell.clone());
    let out = docker(&["run", "--name", &shell, "--entrypoint", "/bin/sh", image, "-c", "true"]);
    assert!(!out.status.success(), "a shell ran in the image");

    // The static binary runs with nothing around it, as the non-root user, on a read-only root.
    let version = cleanup.name("version");
    cleanup.containers.push(version.clone());
    let mut args = vec!["run", "--name", version.as_str(), "--network", "none"];
    args.extend_from_slice(&HARDENED);
    args.extend_from_slice(&[image, "version"]);
    assert!(docker_ok(&args).starts_with("azure-secrets-sidecar "));
}

/// The pod of `k8s/base` with `fsGroup: 2000` and the app under another uid: the volume made
/// the way the kubelet makes an emptyDir for `fsGroup` (group 2000, setgid, sticky), the sidecar
/// as 65532 and the app as 1000, both with the supplementary group 2000. The app reads every
/// secret and the token file.
#[test]
fn container_app_under_another_uid_in_fs_group_reads_every_secret() {
    let Some(images) = images("container_app_under_another_uid_in_fs_group_reads_every_secret") else { return };
    let mut pod = Cleanup::new();
    let host_dir = tempfile::tempdir().unwrap();
    let (seed_dir, config_dir) = (host_dir.path().join("seed"), host_dir.path().join("config"));
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::create_dir_all(&config_dir).unwrap();
    let tag = format!("{:08x}", fastrand::u32(..));
    let (password, api_key) = (format!("pw-{tag}-canary"), format!("api-key-{tag}-canary"));
    write_shared(
        &seed_dir,
        "seed.json",
        &serde_json::json!({"demo": {"db-password": password, "api-key": api_key}}).to_string(),
    );
    let network = pod.network("net");
    let emulator_state = pod.volume("emulator-state");
    let secrets = pod.volume("secrets");

    // What the kubelet does for fsGroup on an emptyDir: group-owned by it, setgid (and sticky:
    // tmpfs is 1777). Done by a root container with the default capabilities, like the kubelet.
    let prep_mount = format!("{secrets}:/secrets");
    let prep = pod.run(
        "prep",
        &[
            "-v",
            &prep_mount,
            "--user",
            "0",
            "--entrypoint",
            "/bin/busybox",
            &images.app,
            "sh",
            "-c",
            "chown 0:2000 /secrets && chmod 3777 /secrets",
        ],
    );
    wait_for("the volume prepared", START_LIMIT, || (inspect(&prep, "{{.State.Status}}") == "exited").then_some(()));
    assert_eq!(inspect(&prep, "{{.State.ExitCode}}"), "0");

    let seed_mount = format!("{}:/seed:ro", seed_dir.display());
    let state_mount = format!("{emulator_state}:/emulator-state");
    let mut args = vec!["--network", &network, "--network-alias", "emulator"];
    args.extend_from_slice(&HARDENED);
    args.extend_from_slice(&["--entrypoint", "/azure-emulator"]);
    args.extend_from_slice(&["-v", &state_mount, "-v", &seed_mount, &images.app]);
    args.extend_from_slice(&["--bind", "0.0.0.0", "--advertise-host", "emulator"]);
    args.extend_from_slice(&["--state-dir", "/emulator-state", "--seed", "/seed/seed.json"]);
    let emulator = pod.run("emulator", &args);
    let info: serde_json::Value = wait_for("the emulator's address line", START_LIMIT, || {
        let out = docker(&["logs", &emulator]);
        let line = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with('{')).map(str::to_owned);
        line.map(|l| serde_json::from_str(&l).expect("the address line is JSON"))
    });
    let field = |k: &str| info[k].as_str().unwrap_or_else(|| panic!("{k} in {info}")).to_owned();
    let vault = info["vaults"]["demo"].as_str().expect("vault demo").to_owned();
    let config = [
        "identity:".to_owned(),
        "  mode: workload".to_owned(),
        format!("  client_id: \"{}\"", field("client_id")),
        format!("  tenant_id: \"{}\"", field("tenant_id")),
        "  federated_token_file: /emulator/federated-token".to_owned(),
        format!("  authority_host: \"{}\"", field("authority_url")),
        "tls:\n  ca_file: /emulator/ca.pem".to_owned(),
        "sync:\n  interval: 1s\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s".to_owned(),
        "sources:".to_owned(),
        format!("  - type: keyvault\n    vault: \"{vault}\""),
        "    secrets:\n      - name: db-password\n        path: db/password\n      - name: api-key".to_owned(),
        "log:\n  level: debug\n".to_owned(),
    ]
    .join("\n");
    write_shared(&config_dir, "config.yaml", &config);

    let hardened_as = |user: &'static str| {
        vec![
            "--read-only",
            "--user",
            user,
            "--group-add",
            "2000",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ]
    };
    let emulator_mount = format!("{emulator_state}:/emulator:ro");
    // `nocopy`: Docker would otherwise copy the image's own /secrets (65532, not setgid) over
    // the volume's owner and mode at this first mount that finds it empty.
    let secrets_mount = format!("{secrets}:/secrets:nocopy");
    let config_mount = format!("{}:/etc/azure-secrets-sidecar:ro", config_dir.display());
    let mut args = vec!["--network", network.as_str()];
    args.extend(hardened_as("65532:65532"));
    args.extend_from_slice(&["-v", &emulator_mount, "-v", &secrets_mount, "-v", &config_mount, &images.sidecar]);
    let sidecar = pod.run("sidecar", &args);
    wait_for("the sidecar's `probe ready`", START_LIMIT, || {
        if inspect(&sidecar, "{{.State.Running}}") != "true" {
            panic!("the sidecar exited with {}", inspect(&sidecar, "{{.State.ExitCode}}"));
        }
        docker(&["exec", &sidecar, "/azure-secrets-sidecar", "probe", "ready"]).status.success().then_some(())
    });

    let app_mount = format!("{secrets}:/secrets:ro");
    let mut args = vec!["--network", network.as_str()];
    args.extend(hardened_as("1000:1000"));
    args.extend_from_slice(&["-v", &app_mount, &images.app]);
    let app = pod.run("app", &args);
    let read =
        wait_for("the app (uid 1000) to read db/password", START_LIMIT, || app_read(&app, "/secrets/db/password"));
    assert_eq!(read, password);
    assert_eq!(app_read(&app, "/secrets/api-key").as_deref(), Some(api_key.as_str()));
    assert!(app_read(&app, "/secrets/.sidecar-token").is_some_and(|t| t.trim().len() == 64), "the token file");
    let listing = docker_ok(&["exec", &app, "/bin/busybox", "ls", "-lnR", "/secrets/..data/"]);
    for line in listing.lines().filter(|l| l.starts_with('-') || l.starts_with('d')) {
        let group = line.split_whitespace().nth(3).unwrap_or_default();
        assert_eq!(group, "2000", "not in fsGroup: {line}\n{listing}");
    }
}
