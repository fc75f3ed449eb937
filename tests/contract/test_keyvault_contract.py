"""Contract tests: Microsoft's own Python SDK (azure-identity, azure-keyvault-secrets) against the
emulator. If the SDK can authenticate, read, page and fail the way it does against Azure, the
emulator speaks Azure's wire format, not just our client's idea of it.

Run: python3 -m pip install -r tests/contract/requirements.txt
     cargo build --workspace && python3 -m pytest tests/contract -q
The emulator is the `azure-emulator` binary ($EMULATOR_BIN, default target/debug/azure-emulator). Every request stays on 127.0.0.1.
"""

import json
import time
import urllib.parse
from pathlib import Path

import pytest
from emulator_process import EmulatorProcess, running
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient

VAULT = "contract"
GENERATED = 30  # more than one page of 25

# Variables that would make azure-identity pick another mechanism than the one under test.
AZURE_IDENTITY_VARS = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_SECRET",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
)


class Emulator(EmulatorProcess):
    """The emulator with the contract vault."""

    def __init__(self, proc, info):
        super().__init__(proc, info)
        self.vault_url = info["vaults"][VAULT]

    def set_secret(self, name, value, **attributes):
        return self.control("PUT", f"/vaults/{VAULT}/secrets/{name}", {"value": value, **attributes})["version"]

    def update_secret(self, name, **attributes):
        self.control("PATCH", f"/vaults/{VAULT}/secrets/{name}", attributes)

    def counts(self):
        return self.control("GET", "/counts")

    def requests(self):
        return self.control("GET", "/requests")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    work = tmp_path_factory.mktemp("emulator")
    seed = work / "seed.json"
    seed.write_text(json.dumps({VAULT: {"seeded": "from-the-seed-file"}}))
    with running(["--state-dir", str(work / "state"), "--vault", VAULT,
         "--seed", str(seed), "--secrets", str(GENERATED), "--token-lifetime", "1h"]) as (proc, info):
        yield Emulator(proc, info)


@pytest.fixture
def clean_env(monkeypatch):
    for var in AZURE_IDENTITY_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def workload_credential(emulator):
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


def secret_client(emulator, credential, **kwargs):
    return SecretClient(
        emulator.vault_url,
        credential,
        # The challenge names resource https://vault.azure.net; the vault is 127.0.0.1.
        verify_challenge_resource=False,
        connection_verify=emulator.ca_file,
        **kwargs,
    )


@pytest.fixture(scope="module")
def client(emulator, workload_credential):
    return secret_client(emulator, workload_credential)


def test_workload_identity_gets_the_latest_secret_and_sends_the_token_file(emulator, client):
    emulator.set_secret("db-password", "first")
    latest = emulator.set_secret("db-password", "second", content_type="text/plain", tags={"team": "a"})

    secret = client.get_secret("db-password")

    assert secret.value == "second"
    assert secret.properties.version == latest
    assert secret.id == f"{emulator.vault_url}/secrets/db-password/{latest}"
    assert secret.properties.content_type == "text/plain"
    assert secret.properties.tags == {"team": "a"}
    assert secret.properties.enabled is True
    assert secret.properties.recovery_level == "Recoverable+Purgeable"
    assert secret.properties.created_on is not None
    token_file = Path(emulator.info["federated_token_file"]).read_text()
    assert emulator.control("GET", "/last-assertion")["assertion"] == token_file
    entra = [r for r in emulator.requests() if r["endpoint"] == "aad" and r["method"] == "POST"]
    assert entra and {"client_assertion", "client_assertion_type", "client_id", "scope"} <= set(entra[-1]["form_keys"])


def test_a_secret_is_read_by_version(emulator, client):
    old = emulator.set_secret("rotating", "v1")
    emulator.set_secret("rotating", "v2")

    secret = client.get_secret("rotating", version=old)

    assert secret.value == "v1"
    assert secret.properties.version == old


def test_secret_names_are_case_insensitive_and_answered_as_created(emulator, client):
    # Key Vault object identifiers compare case-insensitively; the service answers with the
    # name as created (learn.microsoft.com, about-keys-secrets-and-certificates).
    first = emulator.set_secret("Mixed-Case", "one")
    second = emulator.set_secret("mixed-case", "two")

    secret = client.get_secret("MIXED-CASE")

    assert secret.value == "two"
    assert secret.name == "Mixed-Case"
    assert secret.id == f"{emulator.vault_url}/secrets/Mixed-Case/{second}"
    assert client.get_secret("mixed-CASE", version=first).value == "one"
    assert [p.name for p in client.list_properties_of_secrets() if p.name.lower() == "mixed-case"] == ["Mixed-Case"]


def test_the_seed_file_is_served(client):
    assert client.get_secret("seeded").value == "from-the-seed-file"


def test_listing_secrets_follows_next_links_past_25(emulator, client):
    emulator.update_secret("secret-0007", enabled=False)
    lists_before = emulator.counts()["vaults"][VAULT]["keyvault_list"]

    props = list(client.list_properties_of_secrets())

    names = {p.name for p in props}
    assert {f"secret-{i:04d}" for i in range(GENERATED)} <= names
    assert len(names) == len(props)
    disabled = [p for p in props if p.name == "secret-0007"]
    assert disabled[0].enabled is False
    pages = emulator.counts()["vaults"][VAULT]["keyvault_list"] - lists_before
    assert pages >= 2, "more than 25 secrets take more than one page"


def test_listing_secrets_honours_the_page_size(emulator, client):
    lists_before = emulator.counts()["vaults"][VAULT]["keyvault_list"]

    props = list(client.list_properties_of_secrets(max_page_size=10))

    assert len(props) > GENERATED
    pages = emulator.counts()["vaults"][VAULT]["keyvault_list"] - lists_before
    assert pages == -(-len(props) // 10)
    queries = [r["query"] for r in emulator.requests() if r["endpoint"] == "keyvault_list"][-pages:]
    assert all("maxresults=10" in q for q in queries)


def test_listing_versions_returns_every_version(emulator, client):
    versions = [emulator.set_secret("versioned", f"v{i}") for i in range(3)]

    props = list(client.list_properties_of_secret_versions("versioned"))

    assert sorted(p.version for p in props) == sorted(versions)
    assert all(p.name == "versioned" for p in props)


def test_a_disabled_secret_raises_403_secret_disabled(emulator, client):
    emulator.set_secret("switched-off", "hidden")
    emulator.update_secret("switched-off", enabled=False)

    with pytest.raises(HttpResponseError) as raised:
        client.get_secret("switched-off")

    assert raised.value.status_code == 403
    assert raised.value.error.code == "Forbidden"
    assert "disabled" in raised.value.message


def test_a_missing_secret_raises_resource_not_found(client):
    with pytest.raises(ResourceNotFoundError) as raised:
        client.get_secret("never-created")

    assert raised.value.status_code == 404
    assert raised.value.error.code == "SecretNotFound"


@pytest.mark.parametrize("api_version", ["7.4", "7.5", "7.6", "2025-07-01"])
def test_every_ga_api_version_reads_a_secret(emulator, workload_credential, api_version):
    emulator.set_secret("versions-check", api_version)
    versioned = secret_client(emulator, workload_credential, api_version=api_version)

    assert versioned.get_secret("versions-check").value == api_version
    last = [r for r in emulator.requests() if r["endpoint"] == "keyvault_get"][-1]
    assert f"api-version={api_version}" in last["query"]


def test_a_throttled_read_is_retried_after_retry_after(emulator, client):
    emulator.set_secret("throttled", "eventually")
    gets_before = emulator.counts()["vaults"][VAULT]["keyvault_get"]
    emulator.control("POST", "/faults", {"endpoint": "keyvault_get", "vault": VAULT, "status": 429,
                                         "retry_after": {"seconds": 1}, "times": 1})
    started = time.monotonic()

    assert client.get_secret("throttled").value == "eventually"

    assert time.monotonic() - started >= 1
    assert emulator.counts()["vaults"][VAULT]["keyvault_get"] - gets_before == 2


def test_the_official_get_secret_example_parses_in_the_sdk(emulator, client):
    emulator.control("POST", "/canned", {"vault": VAULT, "path": "/secrets/mysecretname",
                                         "fixture": "keyvault/7.6/GetSecret-example.json"})
    try:
        secret = client.get_secret("mysecretname")
    finally:
        emulator.control("DELETE", "/canned")

    assert secret.value == "mysecretvalue"
    assert secret.properties.version == "4387e9f3d6e14c459867679a90fd0f79"
    assert secret.properties.vault_url == emulator.vault_url


def test_managed_identity_through_imds_reads_a_secret(emulator, clean_env):
    clean_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.info["imds_url"])
    emulator.set_secret("via-imds", "managed")
    imds_before = emulator.counts()["imds"]

    credential = ManagedIdentityCredential(client_id=emulator.info["client_id"])
    secret = secret_client(emulator, credential).get_secret("via-imds")

    assert secret.value == "managed"
    assert emulator.counts()["imds"] > imds_before
    imds = [r for r in emulator.requests() if r["endpoint"] == "imds"][-1]
    assert imds["status"] == 200
    assert imds["headers"]["metadata"] == "true"
    query = urllib.parse.parse_qs(imds["query"])
    assert query["client_id"] == [emulator.info["client_id"]]
    assert query["resource"] == ["https://vault.azure.net"]
    assert query["api-version"] == ["2018-02-01"]


def test_system_assigned_managed_identity_gets_a_token(emulator, clean_env):
    clean_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.info["imds_url"])

    token = ManagedIdentityCredential().get_token("https://vault.azure.net/.default")

    assert token.token
    assert token.expires_on > time.time() + 3000


def test_an_unassigned_managed_identity_is_reported_unavailable(emulator, clean_env):
    from azure.identity import CredentialUnavailableError

    clean_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.info["imds_url"])

    with pytest.raises(CredentialUnavailableError) as raised:
        ManagedIdentityCredential(client_id="00000000-0000-0000-0000-00000000dead").get_token(
            "https://vault.azure.net/.default")

    assert "Identity not found" in str(raised.value)
