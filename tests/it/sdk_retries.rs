//! Requests as Microsoft's SDKs send them: IMDS retried on azure-identity's schedule (five
//! retries, exponential from 0.8 s; 2.5 s after a 410), scaled here by `sync.min_backoff`
//! (100 ms in tests, 1 s by default), and every request carrying an `x-ms-client-request-id`
//! that failures name beside the service's request id.

use crate::support;

use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn managed_config(w: &World) -> std::path::PathBuf {
    w.write_config(&format!(
        "identity:\n  mode: managed\n  imds_endpoint: \"{}\"\ntls:\n  ca_file: \"{}\"\nsync:\n  interval: 30s\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s\n  request_timeout: 5s\noutput:\n  dir: \"{}\"\nserve:\n  listen: null\nhealth:\n  listen: 127.0.0.1:0\nlog:\n  level: debug\nsources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n",
        w.emu.imds_url(),
        w.emu.ca_file().display(),
        w.out().display(),
        w.vault("main")
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn imds_is_retried_five_times_on_azure_identitys_schedule() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", CANARY).unwrap();
    // NMI answering 404 five times (a binding being assigned): the sixth attempt of the first
    // token request succeeds, without the poll failing.
    w.emu.add_fault(Fault::status(404).on(Endpoint::Imds).times(5));
    let sc = Sidecar::spawn(&w, &managed_config(&w), &[], &[]);
    wait_for("published", LIMIT, || read(&w.out(), "db-password")).await;
    let imds: Vec<_> = w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::Imds).collect();
    assert_eq!(imds.len(), 6, "five retries then the token: {imds:?}");
    assert!(!sc.logs().contains("poll failed"), "one token request rode out the 404s: {}", sc.logs());
    // Waits of 0, 1.6, 3.2, 6.4, 12.8 times min_backoff (100 ms): 0, 160, 320, 640, 1280 ms.
    let gaps: Vec<u64> = imds.windows(2).map(|p| p[1].at_ms - p[0].at_ms).collect();
    for (gap, want) in gaps.iter().zip([0u64, 160, 320, 640, 1280]) {
        assert!(*gap + 20 >= want && *gap < want + 1000, "gaps {gaps:?}");
    }
    assert!(gaps[4] >= 1260, "the schedule doubles: {gaps:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_carries_a_client_request_id_and_failures_name_it() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", CANARY).unwrap();
    w.emu.add_fault(Fault::status(403).on(Endpoint::KeyvaultGet).at_path("/secrets/db-password"));
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n",
        w.base_config("30s"),
        w.vault("main")
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("the failure", LIMIT, || sc.logs().contains("client request id").then_some(())).await;
    let log = w.emu.request_log();
    assert!(log.len() >= 2, "{log:?}");
    let ids: Vec<&str> =
        log.iter().map(|r| r.headers.get("x-ms-client-request-id").map(String::as_str).unwrap_or("")).collect();
    for (r, id) in log.iter().zip(&ids) {
        let uuid = id.len() == 36 && id.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
        assert!(uuid, "{} {} carries no client request id: {id:?}", r.method, r.path);
    }
    let refused = log.iter().find(|r| r.status == Some(403)).unwrap();
    let id = &refused.headers["x-ms-client-request-id"];
    let line = sc.logs().lines().find(|l| l.contains("client request id")).unwrap().to_string();
    assert!(line.contains(id.as_str()), "the failure names the request's client id {id}: {line}");
    assert!(line.contains("request id "), "and the service's request id: {line}");
}
