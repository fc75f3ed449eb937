//! What polls cost, counted by the emulator against the real binary: an unchanged vault costs
//! its list pages only, a changed secret one GET, a few named secrets in a large vault a GET
//! each and no list, a pinned version one GET ever.

use crate::support;

use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// One poll as the emulator saw it: list pages requested, then the paths read one by one.
#[derive(Debug, Clone, PartialEq)]
struct PollCost {
    pages: usize,
    gets: Vec<String>,
}

/// The request log of `vault`, cut into polls where a listing starts (a list request with no
/// `$skiptoken`). Requests before the first listing are dropped; the last poll may be in
/// progress.
fn polls(w: &World, vault: &str) -> Vec<PollCost> {
    let mut polls: Vec<PollCost> = Vec::new();
    for r in w.emu.request_log().into_iter().filter(|r| r.vault.as_deref() == Some(vault)) {
        match r.endpoint {
            Endpoint::KeyvaultList => {
                if !r.query.as_deref().unwrap_or("").contains("$skiptoken") {
                    polls.push(PollCost { pages: 0, gets: Vec::new() });
                }
                if let Some(p) = polls.last_mut() {
                    p.pages += 1;
                }
            }
            Endpoint::KeyvaultGet => {
                if let Some(p) = polls.last_mut() {
                    p.gets.push(r.path);
                }
            }
            _ => {}
        }
    }
    polls
}

/// GETs of `path` in the log of `vault`.
fn gets_of(w: &World, vault: &str, path: &str) -> usize {
    w.emu.request_log().iter().filter(|r| r.vault.as_deref() == Some(vault) && r.path == path).count()
}

async fn wait_count(w: &World, endpoint: Endpoint, at_least: u64, what: &str) {
    assert!(w.emu.wait_for_count(endpoint, Some("main"), at_least, LIMIT).await, "timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_vault_costs_its_list_pages_and_a_changed_secret_one_get() {
    let w = World::start(&["main"]).await;
    for i in 0..60 {
        w.emu.set_secret("main", &format!("app-{i:02}"), &format!("{CANARY}-{i}")).unwrap();
    }
    // 2.5 s apart, so a read in the poll after a write comes at least 2 s after it: `updated`
    // counts whole seconds, and a version read sooner is read once more (see keyvault.rs).
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    all: true\n",
        w.base_config("2500ms"),
        w.vault("main")
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("first publish", LIMIT, || read(&out, "app-59")).await;

    // 60 secrets are 3 pages. Once poll 4 has listed its last page, change a secret of page 1:
    // poll 4 saw the old state, poll 5 sees the new one.
    wait_count(&w, Endpoint::KeyvaultList, 4 * 3, "poll 4's listing").await;
    w.emu.set_secret("main", "app-07", "rotated").unwrap();
    wait_for("the change published", LIMIT, || read(&out, "app-07").filter(|v| v == "rotated")).await;
    wait_count(&w, Endpoint::KeyvaultList, 6 * 3 + 1, "poll 7 to start").await;

    let polls = polls(&w, "main");
    let mut first = polls[0].gets.clone();
    first.sort();
    let every: Vec<String> = (0..60).map(|i| format!("/secrets/app-{i:02}")).collect();
    assert_eq!((polls[0].pages, first), (3, every), "poll 1 reads every secret");
    // Poll 2 may read again what poll 1 read within 2 s of its write; from poll 3 on, nothing.
    let unchanged = PollCost { pages: 3, gets: vec![] };
    assert_eq!(polls[2..4], [unchanged.clone(), unchanged.clone()], "polls 3 and 4 of an unchanged vault");
    assert_eq!(polls[4], PollCost { pages: 3, gets: vec!["/secrets/app-07".into()] }, "poll 5: one changed secret");
    assert_eq!(polls[5], unchanged, "poll 6: unchanged again");
    assert_eq!(read(&out, "app-06").unwrap(), format!("{CANARY}-6"), "the held values stay published");
    assert_clean(&sc.logs(), &[CANARY, "rotated"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_few_named_secrets_in_a_large_vault_cost_a_get_each_and_no_listing() {
    let w = World::start(&["main"]).await;
    for i in 0..100 {
        w.emu.set_secret("main", &format!("bulk-{i:03}"), "x").unwrap();
    }
    for name in ["api-key", "db-password", "zz-token"] {
        w.emu.set_secret("main", name, &format!("{CANARY}-{name}")).unwrap();
    }
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: api-key\n      - name: db-password\n      - name: zz-token\n",
        w.base_config("1s"),
        w.vault("main")
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("first publish", LIMIT, || read(&w.out(), "zz-token")).await;
    // Six polls of 3 GETs: 103 secrets are 5 pages, more than 3 GETs, so after one probe of
    // at most 2 pages (3 named - 1) the vault is not listed again.
    wait_count(&w, Endpoint::KeyvaultGet, 6 * 3, "six polls").await;
    assert_eq!(w.emu.count(Endpoint::KeyvaultList, Some("main")), 2, "one probe of 2 pages, then no listing");
    let log = w.emu.request_log();
    let gets: Vec<&str> = log.iter().filter(|r| r.endpoint == Endpoint::KeyvaultGet).map(|r| r.path.as_str()).collect();
    assert!(
        gets.iter().all(|p| ["/secrets/api-key", "/secrets/db-password", "/secrets/zz-token"].contains(p)),
        "{gets:?}"
    );
    let last_list = log.iter().rposition(|r| r.endpoint == Endpoint::KeyvaultList).unwrap();
    let after_probe = log[last_list..].iter().filter(|r| r.endpoint == Endpoint::KeyvaultGet).count();
    assert!(after_probe >= 9, "polls after the probe read each named secret: {after_probe} GETs");
    assert_clean(&sc.logs(), &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_version_is_read_once() {
    let w = World::start(&["main"]).await;
    let pinned = w.emu.set_secret("main", "db-password", "first").unwrap();
    w.emu.set_secret("main", "db-password", "second").unwrap();
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n        version: \"{pinned}\"\n      - name: api-key\n",
        w.base_config("1s"),
        w.vault("main")
    ));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("first publish", LIMIT, || read(&w.out(), "db-password")).await;
    // One named latest secret: a GET a poll (never a list). Five polls later, the pinned
    // version has still been read once.
    wait_for("five polls", LIMIT, || (gets_of(&w, "main", "/secrets/api-key") >= 5).then_some(())).await;
    assert_eq!(gets_of(&w, "main", &format!("/secrets/db-password/{pinned}")), 1);
    assert_eq!(w.emu.count(Endpoint::KeyvaultList, Some("main")), 0);
    assert_eq!(read(&w.out(), "db-password").as_deref(), Some("first"));
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_names_compare_case_insensitively_as_in_key_vault() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", &format!("{CANARY}-db")).unwrap();
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    // The config names `DB-Password`; the vault holds `db-password` (names are case-insensitive).
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    all: true\n    secrets:\n      - name: DB-Password\n        path: db/password\n",
        w.base_config("2500ms"),
        w.vault("main")
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("first publish", LIMIT, || read(&w.out(), "db/password").and(read(&w.out(), "api-key"))).await;
    assert_eq!(read(&w.out(), "db/password").unwrap(), format!("{CANARY}-db"));
    // 2.5 s apart, as in the first test: from poll 3 on, every version read is settled.
    wait_count(&w, Endpoint::KeyvaultList, 5, "five polls").await;
    assert!(read(&w.out(), "db-password").is_none(), "the named secret is not published again under its listed name");
    let polls = polls(&w, "main");
    // Poll 2 may read again what poll 1 read within 2 s of its write; from poll 3 on, nothing.
    for (i, poll) in polls.iter().enumerate().skip(2).take(2) {
        assert_eq!(poll, &PollCost { pages: 1, gets: vec![] }, "poll {}: a quiet poll reads nothing", i + 1);
    }
    assert_clean(&sc.logs(), &[CANARY]);
}
