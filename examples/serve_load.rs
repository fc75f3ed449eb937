//! Load on the secrets listener, in process, on loopback: a synthetic snapshot is published,
//! then N keep-alive clients share a fixed count of `GET /v1/secrets/{path}` requests (paths
//! round-robin), and the run prints requests/s and p50/p99/max latency. A benchmark, not a test:
//! it asserts only that every answer was a 200 with the right length.
//!
//! ```text
//! cargo run --release --example serve_load -- [--clients 32] [--requests 100000] [--objects 100] [--size 256] [--flood 10000]
//!
//! `--flood N` then opens N connections at once that send nothing (slow clients), and prints
//! how many the connection cap closed, the process's resident memory while they are held, and
//! how soon a normal request is served again once they go.
//! ```
//!
//! Clients and server share the machine (and this process's runtime), so the figures are a
//! floor for the listener, not its ceiling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_secrets_sidecar::output::serve::{self, TOKEN_HEADER};
use azure_secrets_sidecar::published::Published;
use azure_secrets_sidecar::snapshot::Snapshot;
use azure_secrets_sidecar::source::{Object, Polled};
use sidecar_core::relpath::RelPath;
use sidecar_core::secret::{SecretString, SecretValue};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token-0123456789abcdef";

struct Args {
    clients: usize,
    requests: usize,
    objects: usize,
    size: usize,
    flood: usize,
}

fn args() -> Args {
    let mut a = Args { clients: 32, requests: 100_000, objects: 100, size: 256, flood: 0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage(&flag));
        match flag.as_str() {
            "--clients" => a.clients = value.max(1),
            "--flood" => a.flood = value,
            "--requests" => a.requests = value.max(1),
            "--objects" => a.objects = value.max(1),
            "--size" => a.size = value,
            _ => usage(&flag),
        }
    }
    a
}

fn usage(flag: &str) -> ! {
    eprintln!("bad argument {flag:?}\nusage: serve_load [--clients N] [--requests N] [--objects N] [--size BYTES] [--flood CONNECTIONS]");
    std::process::exit(2)
}

fn snapshot(objects: usize, size: usize) -> Snapshot {
    let objects = (0..objects)
        .map(|i| Object {
            path: RelPath::parse(&format!("app/secret-{i}")).unwrap(),
            value: SecretValue::new(vec![b'x'; size]),
            version: format!("{i:032x}"),
            updated: None,
            required: true,
        })
        .collect();
    Snapshot::new().apply("bench", &Ok(Polled { objects, failures: Vec::new() })).snapshot
}

#[tokio::main]
async fn main() {
    let a = args();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let published = Published::new();
    published.set(Arc::new(snapshot(a.objects, a.size)));
    let cancel = CancellationToken::new();
    tokio::spawn(serve::serve(
        listener,
        published,
        Arc::new(std::sync::RwLock::new(SecretString::new(TOKEN.into()))),
        cancel.clone(),
    ));

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..a.clients)
        .map(|_| {
            let next = next.clone();
            let (requests, objects, size) = (a.requests, a.objects, a.size);
            tokio::spawn(async move {
                // One client per worker, one kept-alive connection each.
                let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(1).build().unwrap();
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= requests {
                        return latencies;
                    }
                    let url = format!("http://{addr}/v1/secrets/app/secret-{}", n % objects);
                    let t = Instant::now();
                    let resp = client.get(url).header(TOKEN_HEADER, TOKEN).send().await.expect("request");
                    assert_eq!(resp.status(), 200);
                    assert_eq!(resp.bytes().await.expect("body").len(), size);
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(a.requests);
    for w in workers {
        latencies.extend(w.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    if a.flood > 0 {
        flood(addr, a.flood).await;
    }
    cancel.cancel();

    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!(
        "{} requests, {} clients, {} objects of {} bytes: {:.0} requests/s; latency p50 {:?}, p99 {:?}, max {:?} (in {:.2?})",
        latencies.len(),
        a.clients,
        a.objects,
        a.size,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1],
        elapsed,
    );
}

/// Resident memory of this process (server and clients together), KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn flood(addr: std::net::SocketAddr, n: usize) {
    use tokio::io::AsyncReadExt;
    let before = rss_kib();
    let mut held = Vec::with_capacity(n);
    let mut refused = 0;
    for _ in 0..n {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => held.push(s),
            Err(_) => refused += 1,
        }
    }
    // Let the accept loop catch up, then count the connections it closed (read gives EOF).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut closed = 0;
    for s in &mut held {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_micros(50), s.read(&mut b)).await {
            closed += 1;
        }
    }
    let during = rss_kib();
    let open = held.len() - closed;
    drop(held);
    let released = Instant::now();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{addr}/v1/secrets/app/secret-0");
    loop {
        if let Ok(r) = client.get(&url).header(TOKEN_HEADER, TOKEN).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(released.elapsed() < Duration::from_secs(30), "not served again within 30 s of the flood");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "flood: {n} connection attempts: {open} held open, {closed} closed by the connection cap, {refused} refused by the kernel; RSS {before} KiB before, {during} KiB while held; served again {:?} after release",
        released.elapsed()
    );
}
