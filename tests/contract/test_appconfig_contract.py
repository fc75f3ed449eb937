"""Contract tests: Microsoft's own Python SDK (azure-appconfiguration, azure-identity) against the
emulator's App Configuration store. If the SDK can authenticate, filter, page, get 304s and be
refused the way it is against Azure, the emulator speaks App Configuration's wire format, not
just our client's idea of it.

Run: python3 -m pip install -r tests/contract/requirements.txt
     cargo build --workspace && python3 -m pytest tests/contract -q
The emulator is `azure-emulator --store contract` ($EMULATOR_BIN, default target/debug/azure-emulator). Every request stays on 127.0.0.1.
"""

import json
import urllib.parse
from pathlib import Path

import pytest
from emulator_process import EmulatorProcess, running
from azure.appconfiguration import (
    AzureAppConfigurationClient,
    FeatureFlagConfigurationSetting,
    SecretReferenceConfigurationSetting,
)
from azure.core import MatchConditions
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, WorkloadIdentityCredential

STORE = "contract"
KV_REF = "application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8"
FF = "application/vnd.microsoft.appconfig.ff+json;charset=utf-8"


class Emulator(EmulatorProcess):
    """The emulator with the contract store."""

    def __init__(self, proc, info):
        super().__init__(proc, info)
        self.store_url = info["appconfig_stores"][STORE]

    def set_kv(self, key, value, label=None, content_type=None, tags=None):
        body = {"key": key, "label": label, "value": value, "content_type": content_type, "tags": tags or {}}
        return self.control("PUT", f"/stores/{STORE}/kv", body)["etag"]

    def create_snapshot(self, name, filters, composition_type="key"):
        self.control("PUT", f"/stores/{STORE}/snapshots/{name}",
                     {"filters": filters, "composition_type": composition_type})

    def page_size(self, size):
        self.control("PUT", f"/stores/{STORE}/page-size", {"size": size})

    def store_requests(self):
        return [r for r in self.control("GET", "/requests") if r["endpoint"] == "appconfig_list"]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    work = tmp_path_factory.mktemp("emulator-appconfig")
    with running(["--state-dir", str(work / "state"), "--store", STORE, "--store-replicas", "1", "--vault", "refs",
         "--token-lifetime", "1h"]) as (proc, info):
        yield Emulator(proc, info)


@pytest.fixture(scope="module")
def credential(emulator):
    info = emulator.info
    return WorkloadIdentityCredential(
        tenant_id=info["tenant_id"],
        client_id=info["client_id"],
        token_file_path=info["federated_token_file"],
        authority=info["authority_url"],
        # MSAL would otherwise validate an unknown authority against login.microsoftonline.com.
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
    )


def store_client(emulator, credential, **kwargs):
    # The store is 127.0.0.1: the SDK falls back to the public cloud's audience,
    # https://appconfig.azure.com, the one the emulator accepts.
    return AzureAppConfigurationClient(emulator.store_url, credential, connection_verify=emulator.ca_file, **kwargs)


@pytest.fixture(scope="module")
def client(emulator, credential):
    return store_client(emulator, credential)


@pytest.fixture(scope="module")
def seeded(emulator):
    emulator.set_kv("myapp:db:host", "db.prd", label="prd")
    emulator.set_kv("myapp:db:host", "db.dev", label="dev")
    emulator.set_kv("myapp:db:host", "localhost")
    emulator.set_kv("myapp:log:level", "warn", label="prd")
    emulator.set_kv("other:key", "x", label="prd")
    emulator.set_kv("a,b*c", "reserved")
    return emulator


def test_list_filters_keys_and_labels(seeded, client):
    settings = list(client.list_configuration_settings(key_filter="myapp:*", label_filter="prd"))

    assert [(s.key, s.label, s.value) for s in settings] == [
        ("myapp:db:host", "prd", "db.prd"),
        ("myapp:log:level", "prd", "warn"),
    ]
    assert all(s.etag and s.last_modified for s in settings)
    last = seeded.store_requests()[-1]
    query = urllib.parse.parse_qs(last["query"])
    assert query["key"] == ["myapp:*"] and query["label"] == ["prd"]
    assert query["api-version"] == ["2026-04-01"], "the SDK's default api-version is answered"


def test_the_null_label_is_sent_as_percent_00(seeded, client):
    settings = list(client.list_configuration_settings(key_filter="myapp:*", label_filter="\0"))

    assert [(s.key, s.label, s.value) for s in settings] == [("myapp:db:host", None, "localhost")]
    assert "label=%00" in seeded.store_requests()[-1]["query"]


def test_alternatives_and_escaped_reserved_characters_filter_keys(seeded, client):
    settings = list(client.list_configuration_settings(key_filter="a\\,b\\*c,other:*", label_filter="*"))

    assert sorted(s.key for s in settings) == ["a,b*c", "other:key"]


def test_paging_follows_the_links_and_unchanged_pages_answer_304(seeded, client):
    for i in range(5):
        seeded.set_kv(f"paged:{i}", f"v{i}")
    seeded.page_size(2)
    try:
        pages = client.list_configuration_settings(key_filter="paged:*").by_page()
        seen, etags = [], []
        for page in pages:
            seen.extend(s.key for s in page)
            etags.append(pages.etag)
        assert seen == [f"paged:{i}" for i in range(5)]
        assert len(etags) == 3 and all(etags)

        before = len(seeded.store_requests())
        unchanged = [list(p) for p in client.list_configuration_settings(key_filter="paged:*").by_page(match_conditions=etags)]
        assert unchanged == [], "every page answered 304, so no page is returned"
        answered = seeded.store_requests()[before:]
        assert [r["status"] for r in answered] == [304, 304, 304], "the SDK paged on through the Link of each 304"
        assert all(r["headers"]["if-none-match"] for r in answered)

        seeded.set_kv("paged:3", "changed")
        changed = [list(p) for p in client.list_configuration_settings(key_filter="paged:*").by_page(match_conditions=etags)]
        assert [[(s.key, s.value) for s in page] for page in changed] == [[("paged:2", "v2"), ("paged:3", "changed")]]
    finally:
        seeded.page_size(100)


def test_a_conditional_get_answers_304_until_the_setting_changes(seeded, client):
    setting = client.get_configuration_setting("myapp:log:level", label="prd")
    assert setting.value == "warn"

    assert client.get_configuration_setting(
        "myapp:log:level", label="prd", etag=setting.etag, match_condition=MatchConditions.IfModified) is None
    assert seeded.store_requests()[-1]["status"] == 304

    seeded.set_kv("myapp:log:level", "debug", label="prd")
    changed = client.get_configuration_setting(
        "myapp:log:level", label="prd", etag=setting.etag, match_condition=MatchConditions.IfModified)
    assert changed.value == "debug" and changed.etag != setting.etag


def test_a_missing_setting_raises_resource_not_found(client):
    with pytest.raises(ResourceNotFoundError):
        client.get_configuration_setting("never-created")


def test_content_types_give_the_sdks_reference_and_feature_flag_types(seeded, client):
    seeded.set_kv("typed:ref", json.dumps({"uri": "https://refs.vault.azure.net/secrets/db-password"}), content_type=KV_REF)
    flag = {"id": "Beta", "description": "", "enabled": True,
            "conditions": {"client_filters": [{"name": "Microsoft.Percentage", "parameters": {"Value": 50}}]}}
    seeded.set_kv(".appconfig.featureflag/Beta", json.dumps(flag), content_type=FF)

    reference = client.get_configuration_setting("typed:ref")
    flags = list(client.list_configuration_settings(key_filter=".appconfig.featureflag/*"))

    assert isinstance(reference, SecretReferenceConfigurationSetting)
    assert reference.secret_id == "https://refs.vault.azure.net/secrets/db-password"
    assert len(flags) == 1 and isinstance(flags[0], FeatureFlagConfigurationSetting)
    assert flags[0].feature_id == "Beta" and flags[0].enabled is True
    assert flags[0].filters == [{"name": "Microsoft.Percentage", "parameters": {"Value": 50}}]


def test_sync_tokens_come_back_on_the_next_request(seeded, client):
    client.get_configuration_setting("myapp:db:host", label="prd")
    client.get_configuration_setting("myapp:db:host", label="prd")

    token = seeded.store_requests()[-1]["headers"].get("sync-token", "")
    assert token.startswith("emu1="), "the SDK keeps the emulator's Sync-Token and sends it back"


def test_a_client_secret_credential_reads_the_store(emulator, seeded):
    info = emulator.info
    secret = Path(info["client_secret_file"]).read_text().strip()
    credential = ClientSecretCredential(
        info["tenant_id"], info["client_id"], secret,
        authority=info["authority_url"], disable_instance_discovery=True, connection_verify=emulator.ca_file)

    setting = store_client(emulator, credential).get_configuration_setting("myapp:db:host", label="prd")

    assert setting.value == "db.prd"


def test_a_token_for_the_key_vault_audience_is_refused_with_401(emulator, credential, seeded):
    wrong = store_client(emulator, credential, audience="https://vault.azure.net/")  # the SDK appends ".default"

    with pytest.raises(ClientAuthenticationError) as raised:
        wrong.get_configuration_setting("myapp:db:host", label="prd")

    assert raised.value.status_code == 401
    last = emulator.store_requests()[-1]
    assert last["status"] == 401 and last["auth"] == "bearer"


def test_tag_filters_select_by_every_tag_given(seeded, client):
    seeded.set_kv("tagged:a", "1", tags={"env": "prod", "team": "x"})
    seeded.set_kv("tagged:b", "2", tags={"env": "prod"})
    seeded.set_kv("tagged:c", "3", tags={"env": "dev"})
    prod = list(client.list_configuration_settings(key_filter="tagged:*", tags_filter=["env=prod"]))
    assert sorted(s.key for s in prod) == ["tagged:a", "tagged:b"]
    assert prod[0].tags == {"env": "prod", "team": "x"}
    both = list(client.list_configuration_settings(key_filter="tagged:*", tags_filter=["env=prod", "team=x"]))
    assert [s.key for s in both] == ["tagged:a"]


def test_tag_filters_take_backslash_escapes_of_the_reserved_characters(seeded, client):
    # `*`, `\` and `,` are reserved in tag filters and must be escaped with `\`; a tag value
    # may hold `=` (the filter splits at the first one).
    seeded.set_kv("esc:a", "1", tags={"a,b": r"x*y\z=w"})
    seeded.set_kv("esc:b", "2", tags={"a,b": "other"})
    found = list(client.list_configuration_settings(key_filter="esc:*", tags_filter=[r"a\,b=x\*y\\z=w"]))
    assert [s.key for s in found] == ["esc:a"]
    for unescaped in ["a,b=other", r"a\,b=x*y"]:
        with pytest.raises(HttpResponseError) as e:
            list(client.list_configuration_settings(key_filter="esc:*", tags_filter=[unescaped]))
        assert e.value.status_code == 400 and "tags" in str(e.value)


def test_a_snapshot_is_read_by_name_and_keeps_what_it_captured(seeded, client):
    seeded.set_kv("snap:a", "1", label="prd")
    seeded.set_kv("snap:b", "2")
    seeded.set_kv("snap:b", "2-prd", label="prd")
    seeded.create_snapshot("release-1", [{"key": "snap:*"}, {"key": "snap:*", "label": "prd"}])
    snapshot = client.get_snapshot("release-1")
    assert snapshot.name == "release-1" and snapshot.status == "ready"
    assert snapshot.composition_type == "key" and snapshot.items_count == 2
    assert [(f.key, f.label) for f in snapshot.filters] == [("snap:*", None), ("snap:*", "prd")]
    seeded.set_kv("snap:a", "changed", label="prd")
    items = {s.key: (s.value, s.label) for s in client.list_configuration_settings(snapshot_name="release-1")}
    # `key` composition: one per key, the later filter wins; immutable once taken.
    assert items == {"snap:a": ("1", "prd"), "snap:b": ("2-prd", "prd")}
    with pytest.raises(ResourceNotFoundError):
        client.get_snapshot("no-such-snapshot")
    with pytest.raises(ResourceNotFoundError):
        list(client.list_configuration_settings(snapshot_name="no-such-snapshot"))


def test_a_replica_address_serves_the_same_store(seeded, credential):
    replica_url = seeded.info["appconfig_replicas"][STORE][0]
    assert replica_url != seeded.store_url
    replica = AzureAppConfigurationClient(replica_url, credential, connection_verify=seeded.ca_file)
    seeded.set_kv("replicated:k", "v1", label="prd")
    got = replica.get_configuration_setting("replicated:k", label="prd")
    assert got.value == "v1"
    assert [s.key for s in replica.list_configuration_settings(key_filter="myapp:*", label_filter="prd")] == [
        "myapp:db:host", "myapp:log:level"]
