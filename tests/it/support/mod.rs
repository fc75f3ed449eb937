//! Test harness: the in-process emulator, a temp dir per test, the real binary as a child
//! process with a clean environment, and waiting on conditions with deadlines (never sleeps as
//! synchronisation).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use azure_emulator::{Emulator, EmulatorConfig, Endpoint, Fault, RetryAfter};

pub const BIN: &str = env!("CARGO_BIN_EXE_azure-secrets-sidecar");

/// Canary values planted in the emulator; logs must never contain them.
pub const CANARY: &str = "canary-7d1f0c5e-value";

pub struct World {
    pub emu: Emulator,
    pub tmp: tempfile::TempDir,
}

impl World {
    pub async fn start(vaults: &[&str]) -> World {
        World::with_stores(vaults, &[]).await
    }

    /// An emulator with these vaults and App Configuration stores.
    pub async fn with_stores(vaults: &[&str], stores: &[&str]) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let emu = Emulator::start(EmulatorConfig {
            state_dir: Some(tmp.path().join("emulator")),
            vaults: vaults.iter().map(|v| v.to_string()).collect(),
            appconfig_stores: stores.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("emulator starts");
        World { emu, tmp }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// A federated token file, as the kubelet projects it.
    pub fn token_file(&self) -> PathBuf {
        let p = self.path("azure-identity-token");
        if !p.exists() {
            std::fs::write(&p, "projected-sa-token-1").unwrap();
        }
        p
    }

    /// The identity section for workload identity against the emulator.
    pub fn workload_identity(&self) -> String {
        format!(
            "identity:\n  mode: workload\n  client_id: \"{}\"\n  tenant_id: \"{}\"\n  federated_token_file: \"{}\"\n  authority_host: \"{}\"\n",
            self.emu.client_id(),
            self.emu.tenant_id(),
            self.token_file().display(),
            self.emu.authority_url()
        )
    }

    /// Everything but `sources`: identity, TLS trust of the emulator CA, fast sync, output dir,
    /// and both listeners on ports chosen at start (tests run in parallel; the bound addresses
    /// are logged).
    pub fn base_config(&self, interval: &str) -> String {
        self.base_config_at(interval, "debug")
    }

    pub fn base_config_at(&self, interval: &str, level: &str) -> String {
        format!(
            "{}tls:\n  ca_file: \"{}\"\nsync:\n  interval: {interval}\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s\n  request_timeout: 5s\noutput:\n  dir: \"{}\"\nserve:\n  listen: 127.0.0.1:0\nhealth:\n  listen: 127.0.0.1:0\nlog:\n  level: {level}\n",
            self.workload_identity(),
            self.emu.ca_file().display(),
            self.out().display()
        )
    }

    pub fn vault(&self, name: &str) -> String {
        self.emu.vault_url(name).expect("vault exists").to_string()
    }

    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let p = self.path("config.yaml");
        std::fs::write(&p, yaml).unwrap();
        p
    }
}

/// The real binary, running.
pub struct Sidecar {
    pub child: Child,
    pub log: PathBuf,
}

impl Sidecar {
    /// `run --config <config>` with only `env` in the environment.
    pub fn spawn(world: &World, config: &Path, extra_args: &[&str], env: &[(&str, String)]) -> Sidecar {
        let log = world.path(&format!("sidecar-{}.log", fastrand::u32(..)));
        let child = base_command(env)
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("sidecar starts");
        Sidecar { child, log }
    }

    /// Whether the process has exited (without reaping it for `wait_exit`'s status).
    pub fn child_exited(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .map_or(true, |stat| stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Wait for exit within `limit`; panics with the log if it does not.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sidecar did not exit within {limit:?}; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command for the binary with a clean environment (only PATH and `env`).
pub fn base_command(env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Poll `cond` until it returns `Some` or `limit` passes; the panic message says what was awaited.
pub async fn wait_for<T>(what: &str, limit: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The content of a published file, if present.
pub fn read(out: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(out.join(rel)).ok()
}

/// Assert that no canary (or other forbidden string) appears in `text`.
pub fn assert_clean(text: &str, forbidden: &[&str]) {
    for f in forbidden {
        assert!(!text.contains(f), "forbidden string {f:?} found in:\n{text}");
    }
}

// ---- listeners, readiness ------------------------------------------------------------------

/// The `addr=` of the first log line containing `marker` (the bound listener addresses).
pub fn logged_addr(logs: &str, marker: &str) -> Option<std::net::SocketAddr> {
    logs.lines()
        .find(|l| l.contains(marker))?
        .split_whitespace()
        .find_map(|t| t.strip_prefix("addr="))
        .and_then(|a| a.trim_matches('"').parse().ok())
}

/// The health and secrets listeners' bound addresses, read from the start-up log.
pub async fn listener_addrs(sc: &Sidecar) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let limit = Duration::from_secs(20);
    let health = wait_for("the health listener's address", limit, || logged_addr(&sc.logs(), "health listener")).await;
    let serve = wait_for("the secrets listener's address", limit, || logged_addr(&sc.logs(), "secrets listener")).await;
    (health, serve)
}

/// The status of a GET, `None` when nothing answered.
pub async fn http_status(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    client.get(url).send().await.ok().map(|r| r.status().as_u16())
}

/// Await `cond` until it yields `Some` or `limit` passes.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- a TCP gate in front of a listener -----------------------------------------------------

/// A TCP forwarder on a loopback port of its own to `target` (TLS passes through untouched).
/// `close` stops listening and cuts every open connection, so connecting gives "connection
/// refused", as a vault whose endpoint went away; `open` listens on the same port again.
pub struct Gate {
    pub port: u16,
    target: std::net::SocketAddr,
    running: std::sync::Mutex<Option<tokio_util::sync::CancellationToken>>,
}

impl Gate {
    pub async fn start(target: std::net::SocketAddr) -> std::sync::Arc<Gate> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = std::sync::Arc::new(Gate { port, target, running: std::sync::Mutex::new(None) });
        gate.serve(listener);
        gate
    }

    /// The gate's base URL for a target `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let cancel = tokio_util::sync::CancellationToken::new();
        *self.running.lock().unwrap() = Some(cancel.clone());
        let target = self.target;
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        conns.spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
            }
            drop(listener);
            conns.abort_all();
        });
    }

    /// Refuse connections from now on (and cut the open ones).
    pub async fn close(&self) {
        if let Some(cancel) = self.running.lock().unwrap().take() {
            cancel.cancel();
        }
        // Closed once connecting is refused.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "the gate still accepts connections");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Listen on the same port again.
    pub async fn open(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("rebind the gate's port");
        self.serve(listener);
    }
}

/// `https://127.0.0.1:<port>` -> the socket address.
pub fn addr_of(url: &str) -> std::net::SocketAddr {
    let u = url::Url::parse(url).unwrap();
    std::net::SocketAddr::new(u.host_str().unwrap().parse().unwrap(), u.port().unwrap())
}

// ---- watching the published files through a fault ------------------------------------------

/// What a `Watch` saw: how many checks ran and every violation (a file not as published, or
/// `/readyz` not 200).
#[derive(Debug, Default)]
pub struct Watched {
    pub checks: u64,
    pub violations: Vec<String>,
}

/// Checks every 10 ms, until stopped, that each `(path, content)` reads exactly `content` below
/// `out` and that `/readyz` on `health` answers 200.
pub struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Watched>,
}

impl Watch {
    pub fn start(out: &Path, expected: &[(&str, &str)], health: Option<std::net::SocketAddr>) -> Watch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let out = out.to_path_buf();
        let expected: Vec<(String, String)> = expected.iter().map(|(p, c)| (p.to_string(), c.to_string())).collect();
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut w = Watched::default();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (path, content) in &expected {
                    match std::fs::read(out.join(path)) {
                        Ok(b) if b == content.as_bytes() => {}
                        Ok(b) => {
                            w.violations.push(format!("{path}: {} bytes, not the published {}", b.len(), content.len()))
                        }
                        Err(e) => w.violations.push(format!("{path}: {e}")),
                    }
                }
                if let Some(h) = health {
                    match http_status(&format!("http://{h}/readyz")).await {
                        Some(200) => {}
                        other => w.violations.push(format!("/readyz answered {other:?}")),
                    }
                }
                w.checks += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            w
        });
        Watch { stop, task }
    }

    pub async fn stop(self) -> Watched {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// One line of figures for RELIABILITY.md, printed by the tests (`cargo test -- --nocapture`).
pub fn figure(test: &str, fields: &[(&str, String)]) {
    let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("FIGURE test={test} {}", fields.join(" "));
}

// ---- another uid ---------------------------------------------------------------------------

/// Whether the tests run as root (CI does): only root can make entries of another uid.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Let any uid read the test's temp dir (config, CA file, federated token), as a pod's mounts
/// are readable by its containers.
pub fn readable_by_all(world: &World) {
    let ok = Command::new("chmod").arg("-R").arg("a+rX").arg(world.tmp.path()).status().unwrap();
    assert!(ok.success());
}

/// `chown -R uid:gid path`.
pub fn chown(path: &Path, uid: u32, gid: u32) {
    let ok = Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(path).status().unwrap();
    assert!(ok.success());
}

impl Sidecar {
    /// `run --config <config>` as `uid`/`gid` with no supplementary groups (the harness runs
    /// as root; the sidecar in a pod does not).
    pub fn spawn_as(world: &World, config: &Path, uid: u32, gid: u32) -> Sidecar {
        use std::os::unix::process::CommandExt;
        let log = world.path(&format!("sidecar-{}.log", fastrand::u32(..)));
        let mut cmd = Command::new(bin_for_any_uid(world));
        cmd.env_clear();
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(config)
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("sidecar starts");
        Sidecar { child, log }
    }
}

impl Sidecar {
    /// `run --config <config>` as `uid`/`gid` with the supplementary `groups` (through
    /// util-linux `setpriv`, as a pod's `fsGroup` adds a group to every container).
    pub fn spawn_in_groups(world: &World, config: &Path, uid: u32, gid: u32, groups: &[u32]) -> Sidecar {
        let log = world.path(&format!("sidecar-{}.log", fastrand::u32(..)));
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let child = Command::new("setpriv")
            .env_clear()
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg(format!("--groups={}", groups.join(",")))
            .arg(bin_for_any_uid(world))
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("setpriv starts the sidecar");
        Sidecar { child, log }
    }
}

/// The binary copied into the world's temp dir, mode 0755: the checkout may sit in a directory
/// other uids cannot enter (a `mktemp -d` clone is 0700), as a pod's image never does.
fn bin_for_any_uid(world: &World) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = world.path("azure-secrets-sidecar");
    if !copy.exists() {
        // A hard link where the file system allows (the binary is 0755 already), else a copy.
        if std::fs::hard_link(BIN, &copy).is_err() {
            std::fs::copy(BIN, &copy).unwrap();
        }
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy
}

/// Whether util-linux `setpriv` is on PATH.
pub fn have_setpriv() -> bool {
    Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A webhook receiver on loopback: its URL (`/-/reload`) and every POST body it receives, in order.
pub async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/-/reload", hook.local_addr().unwrap());
    let (tx, bodies) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        loop {
            let (stream, _) = hook.accept().await.unwrap();
            let tx = tx.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let tx = tx.clone();
                async move {
                    use http_body_util::BodyExt;
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        hyper::body::Bytes::new(),
                    )))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (hook_url, bodies)
}

/// `scripts/validate-k8s.sh FILES...`: the manifests are valid against the Kubernetes schemas.
pub fn validate_k8s(files: &[&Path]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/validate-k8s.sh"))
        .args(files)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "validate-k8s.sh rejects the output:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `Host` header of every token request (POST) the emulator's Entra ID received.
pub fn token_request_hosts(w: &World) -> Vec<String> {
    w.emu
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == azure_emulator::Endpoint::Aad && r.method == "POST")
        .filter_map(|r| r.headers.get("host").cloned())
        .collect()
}
