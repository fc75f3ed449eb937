"""Parity: one emulator store loaded by Microsoft's official Python provider
(azure-appconfiguration-provider, pinned in requirements.txt) and by the sidecar (`run --once`,
format json), compared key by key, feature flags included, before and after a change. Where
the sidecar deliberately differs, the difference is asserted here and stated in docs/app-configuration.md's
App Configuration section (DIFFERENCES).

Run: python3 -m pip install -r tests/interop/requirements.txt
     cargo build --workspace && python3 -m pytest tests/interop -q
"""

import json
import os

import pytest
from azure.appconfiguration.provider import SettingSelector, load
from azure.identity import WorkloadIdentityCredential
from emulator_process import running
from sidecar_process import Store, config, emulator_args, run_once

KV_REF = "application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8"
FF = "application/vnd.microsoft.appconfig.ff+json;charset=utf-8"
# The snapshot reference's content type as the provider writes and compares it (_constants.py).
SNAPSHOT_REF = 'application/json; profile="https://azconfig.io/mime-profiles/snapshot-ref"; charset=utf-8'
VAULT = "refs"

# Trimmed keys where the sidecar's JSON document differs from the provider's flat dict, and why
# (docs/app-configuration.md: "Compared with Microsoft's Python provider").
DIFFERENCES = {
    "": "a key empty after trimming is skipped (a document has no empty key)",
    "tls": "a key that is also a parent (tls beside tls:cert) is skipped; the deeper key is kept",
}
FLAG_DIFFERENCE = "null display_name/description/client_filters the Python SDK adds are not written"


def seed(store, vault_url):
    """A store that exercises what the two could disagree on."""
    kvs = [
        # Precedence: the prd select comes second and wins.
        ("app:db:host", None, "localhost", None),
        ("app:db:host", "prd", "db.prd.internal", None),
        ("app:db:port", None, "5432", None),
        ("app:log:level", "prd", "warn", None),
        ("app:text", None, "line 1\nline \"2\" ü €", None),
        # Keys colliding after trimming (the longest prefix wins): the provider keeps each full
        # key's first position and its last value, then the later key wins.
        ("app:x", None, "from app:x", None),
        ("app:long:x", None, "from app:long:x (null label)", None),
        ("app:long:x", "prd", "from app:long:x (prd)", None),
        # Empty after trimming; leaf and parent.
        ("app:", None, "empty key", None),
        ("app:tls", None, "on", None),
        ("app:tls:cert", None, "cert text", None),
        # JSON content types, invalid JSON, a null value, text that looks like JSON.
        ("app:json:obj", "prd", json.dumps({"a": 1, "b": [True, None, 2.5], "c": {"d": "e"}}), "application/json"),
        ("app:json:profile", None, "[1, 2]", "application/vnd.example+json; charset=utf-8"),
        ("app:json:str", None, '"quoted"', "application/json"),
        ("app:json:null", None, "null", "application/json"),
        ("app:json:bad", None, "{not json", "application/json"),
        ("app:json:text", None, '{"a": 1}', "text/plain"),
        ("app:unset", None, None, None),
        # JSON as the providers parse it: comments skipped, numbers as stored (1.0 is a float,
        # a 30-digit integer keeps its digits), empty containers, an empty value.
        ("app:json:comments", None, '{\n  // pool\n  "size": 10, /* max */ "url": "http://x//y"\n}', "application/json"),
        ("app:json:numbers", None,
         '{"f": 1.0, "u": 12345678901234567890, "big": 123456789012345678901234567890, "e": 1e5, "neg": -0.5}',
         "application/json"),
        ("app:json:emptyobj", None, "{}", "application/json"),
        ("app:json:emptyarr", None, "[]", "application/json"),
        ("app:json:empty", None, "", "application/json"),
        # A snapshot reference (expanded in place) and one to a snapshot that does not exist.
        ("app:snapref", None, json.dumps({"snapshot_name": "base"}), SNAPSHOT_REF),
        ("app:snapref:gone", None, json.dumps({"snapshot_name": "gone"}), SNAPSHOT_REF),
        # The provider's SnapshotReferenceParser strips the name it reads.
        ("app:snapref:padded", None, json.dumps({"snapshot_name": " padded\t"}), SNAPSHOT_REF),
        # A Key Vault reference.
        ("app:db:password", "prd", json.dumps({"uri": f"{vault_url}/secrets/db-password"}), KV_REF),
        # Feature flags: plain, telemetry with an allocation.
        (".appconfig.featureflag/Beta", "prd",
         json.dumps({"id": "Beta", "enabled": True, "conditions": {"client_filters": []}}), FF),
        (".appconfig.featureflag/Exp", "prd", json.dumps({
            "id": "Exp", "enabled": True, "telemetry": {"enabled": True},
            "variants": [{"name": "Off", "configuration_value": False}, {"name": "On", "configuration_value": True}],
            "allocation": {"seed": "s1", "default_when_enabled": "On",
                           "percentile": [{"variant": "Off", "from": 0, "to": 50}, {"variant": "On", "from": 50, "to": 100}]},
        }), FF),
        (".appconfig.featureflag/Other", None, json.dumps({"id": "Other", "enabled": False}), FF),
    ]
    for key, label, value, content_type in kvs:
        store.set_kv(key, value, label=label, content_type=content_type)
    # Snapshots: one selected by name, one a snapshot reference names; both captured, then changed.
    store.set_kv("app:snap:sel", "captured (selected)", label="rel")
    store.set_kv("app:snap:ref", "captured (referenced)", label="base")
    store.create_snapshot("rel", [{"key": "app:snap:sel", "label": "rel"}])
    store.create_snapshot("base", [{"key": "app:snap:ref", "label": "base"}])
    store.set_kv("app:snap:padded", "captured (referenced with spaces)", label="padded")
    store.create_snapshot("padded", [{"key": "app:snap:padded", "label": "padded"}])
    store.set_kv("app:snap:sel", "changed after the snapshot", label="rel")


def endpoint(store):
    """The store's URL as a user may write it (host in capitals, no trailing slash): the
    provider builds each flag's FeatureFlagReference from the endpoint as given."""
    return store.url.replace("127.0.0.1", "LocalHost").rstrip("/")


def provider(store, credential):
    info = store.info
    vault = info["vaults"][VAULT]
    return load(
        endpoint=endpoint(store),
        credential=credential,
        selects=[SettingSelector(key_filter="app:*"), SettingSelector(key_filter="app:*", label_filter="prd"),
                 SettingSelector(snapshot_name="rel")],
        trim_prefixes=["app:", "app:long:"],
        keyvault_credential=credential,
        keyvault_client_configs={vault + "/": {"connection_verify": store.ca_file, "verify_challenge_resource": False}},
        feature_flag_enabled=True,
        feature_flag_selectors=[SettingSelector(key_filter="*", label_filter="prd")],
        # Replica discovery asks DNS for SRV records of the endpoint's host: off (loopback only).
        replica_discovery_enabled=False,
        connection_verify=store.ca_file,
    )


def sidecar(work, store, name):
    sources = [{
        "type": "appconfig", "endpoint": endpoint(store),
        "select": [{"key": "app:*"}, {"key": "app:*", "label": "prd"},
                   {"snapshot": "rel"}, {"key": ".appconfig.featureflag/*", "label": "prd"}],
        "trim_prefix": ["app:", "app:long:"], "path": "appsettings.json", "format": "json",
    }]
    out = work / name
    run_once(work, config(store, out, sources))
    return json.loads((out / "appsettings.json").read_text())


def sdk_fields_removed(theirs, ours):
    """The flag as stored: azure-appconfiguration's FeatureFlagConfigurationSetting re-serialises
    a flag with `display_name` and `description` (null when absent) and `conditions.client_filters`
    (null when there are no conditions); the sidecar writes the flag's JSON as it is stored
    (FLAG_DIFFERENCE)."""
    theirs = json.loads(json.dumps(theirs))
    for field in ("display_name", "description"):
        if theirs.get(field) is None and field not in ours:
            theirs.pop(field, None)
    if theirs.get("conditions") == {"client_filters": None} and "conditions" not in ours:
        theirs.pop("conditions")
    return theirs


def canon(value):
    """The value as JSON text: 1.0 and 1 differ here (Python's == takes them for equal)."""
    return json.dumps(value, sort_keys=True)


def lookup(doc, key):
    node = doc
    for part in key.split(":"):
        if not isinstance(node, dict) or part not in node:
            return ("<missing>",)
        node = node[part]
    return node


def compare(theirs, ours):
    """Every key of the provider's dict at its place in the sidecar's document, and nothing else."""
    theirs = dict(theirs)
    their_flags = theirs.pop("feature_management")["feature_flags"]
    our_flags = ours.pop("feature_management")["feature_flags"]
    diffs = []
    for key, value in theirs.items():
        if key in DIFFERENCES:
            assert canon(lookup(ours, key)) != canon(value), f"{key!r} is listed as a difference but agrees"
            continue
        if canon(lookup(ours, key)) != canon(value):
            diffs.append(f"{key!r}: provider {value!r}, sidecar {lookup(ours, key)!r}")
    expected = {}
    for key, value in theirs.items():
        if key in DIFFERENCES:
            continue
        node = expected
        *parents, last = key.split(":")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    if not diffs and canon(expected) != canon(ours):
        diffs.append(f"the sidecar has more: {json.dumps(ours, sort_keys=True)}\nvs {json.dumps(expected, sort_keys=True)}")
    by_id = lambda flags: sorted(flags, key=lambda f: f["id"])
    their_flags = [sdk_fields_removed(f, o) for f, o in zip(by_id(their_flags), by_id(our_flags))] + by_id(their_flags)[len(our_flags):]
    if by_id(their_flags) != by_id(our_flags):
        diffs.append(f"flags: provider {by_id(their_flags)}, sidecar {by_id(our_flags)}")
    assert not diffs, "\n".join(diffs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("parity")
    with running(emulator_args(work) + ["--vault", VAULT]) as (proc, info):
        store = Store(proc, info)
        credential = WorkloadIdentityCredential(
            tenant_id=info["tenant_id"], client_id=info["client_id"],
            token_file_path=info["federated_token_file"], authority=info["authority_url"],
            disable_instance_discovery=True, connection_verify=store.ca_file,
        )
        yield work, store, credential


def test_the_provider_and_the_sidecar_give_the_same_settings_before_and_after_a_change(world):
    work, store, credential = world
    store.control("PUT", f"/vaults/{VAULT}/secrets/db-password", {"value": "s3cret-1"})
    seed(store, store.info["vaults"][VAULT])
    theirs = provider(store, credential)
    ours = sidecar(work, store, "before")
    assert theirs["db:password"] == "s3cret-1" and theirs["json:obj"]["c"] == {"d": "e"}
    assert theirs["json:comments"] == {"size": 10, "url": "http://x//y"} and theirs["json:empty"] == ""
    assert theirs["snap:sel"] == "captured (selected)" and theirs["snap:ref"] == "captured (referenced)"
    assert theirs["snap:padded"] == "captured (referenced with spaces)"
    compare(theirs, ours)

    store.set_kv("app:db:host", "db2.prd.internal", label="prd")
    store.set_kv("app:json:obj", json.dumps({"a": 2}), label="prd", content_type="application/json")
    store.set_kv("app:new", "added")
    store.control("DELETE", "/stores/interop/kv", {"key": "app:db:port", "label": None})
    store.control("PUT", f"/vaults/{VAULT}/secrets/db-password", {"value": "s3cret-2"})
    store.set_kv(".appconfig.featureflag/Beta", json.dumps({"id": "Beta", "enabled": False}), label="prd",
                 content_type=FF)
    theirs = provider(store, credential)
    ours = sidecar(work, store, "after")
    assert theirs["db:host"] == "db2.prd.internal" and "db:port" not in theirs
    compare(theirs, ours)

    # Every selected flag deleted: the provider still writes feature_management.feature_flags,
    # empty (feature_flag_enabled), and so must the sidecar with a flag select.
    for flag in ("Beta", "Exp"):
        store.control("DELETE", "/stores/interop/kv", {"key": f".appconfig.featureflag/{flag}", "label": "prd"})
    theirs = provider(store, credential)
    ours = sidecar(work, store, "no-flags")
    assert theirs["feature_management"] == {"feature_flags": []}
    compare(theirs, ours)
