"""Contract tests: Key Vault's 401 challenge as Microsoft's SDK (azure-keyvault-secrets/keys,
azure-identity) follows it, against vaults the emulator serves under DNS names
(`{vault}.vault.sov.localhost`, `{hsm}.managedhsm.sov.localhost`) through its CONNECT proxy,
so that the SDK's domain rule (`verify_challenge_resource`, on by default) applies as in Azure.
Nothing is resolved: the SDK's requests to the vaults go to the emulator's loopback proxy,
passed explicitly (`proxies=`), and the authority stays on 127.0.0.1.

Proves the emulator's Managed HSM audience, its vault in another tenant and its CAE claims
challenge are what the SDK expects of Azure.
"""

import json
from pathlib import Path

import pytest
from emulator_process import EmulatorProcess, running
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

DOMAIN = "sov.localhost"
OTHER_TENANT = "0ca1ab1e-2222-4333-8444-555566667777"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    work = tmp_path_factory.mktemp("emulator")
    args = [
        "--state-dir", str(work / "state"),
        "--vault", "main", "--vault", "partner", "--managed-hsm", "keys",
        "--dns-domain", DOMAIN,
        "--keyvault-resource", f"https://vault.{DOMAIN}",
        "--managedhsm-resource", f"https://managedhsm.{DOMAIN}",
        "--vault-tenant", f"partner={OTHER_TENANT}",
    ]
    with running(args) as (proc, info):
        yield EmulatorProcess(proc, info)


def credential(emulator, **kwargs):
    info = emulator.info
    return ClientSecretCredential(
        tenant_id=info["tenant_id"],
        client_id=info["client_id"],
        client_secret=Path(info["client_secret_file"]).read_text(),
        authority=info["authority_url"],
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
        **kwargs,
    )


def vault_options(emulator):
    return {"connection_verify": emulator.ca_file, "proxies": {"https": emulator.info["proxy_url"]}}


def token_requests(emulator):
    return [r for r in emulator.control("GET", "/requests") if r["endpoint"] == "aad" and r["method"] == "POST"]


def test_vaults_are_named_in_the_domain(emulator):
    assert emulator.info["vaults"]["main"] == f"https://main.vault.{DOMAIN}"
    assert emulator.info["vaults"]["keys"] == f"https://keys.managedhsm.{DOMAIN}"


def test_the_sdk_takes_the_managed_hsm_audience_from_its_challenge(emulator):
    emulator.control("PUT", "/vaults/keys/keys/signing", {"kty": "ec"})
    emulator.control("DELETE", "/requests")
    client = KeyClient(emulator.info["vaults"]["keys"], credential(emulator), **vault_options(emulator))

    key = client.get_key("signing")

    assert key.key_type in ("EC", "EC-HSM")
    scopes = [r["scope"] for r in token_requests(emulator)]
    assert scopes == [f"https://managedhsm.{DOMAIN}/.default"]


def test_the_sdk_refuses_a_challenge_for_a_resource_outside_the_vaults_domain(emulator):
    foreign = f'Bearer authorization="https://login.{DOMAIN}/{emulator.info["tenant_id"]}", resource="https://management.{DOMAIN}"'
    emulator.control("POST", "/canned", {
        "vault": "main", "path": "/secrets/guarded",
        "responses": [{"status": 401, "headers": {"www-authenticate": foreign}, "body": {"error": {"code": "Unauthorized"}}}],
    })
    emulator.control("DELETE", "/requests")
    client = SecretClient(emulator.info["vaults"]["main"], credential(emulator), **vault_options(emulator))
    try:
        with pytest.raises(Exception, match="does not match the requested domain"):
            client.get_secret("guarded")
    finally:
        emulator.control("DELETE", "/canned")
    assert token_requests(emulator) == [], "no token for the foreign resource"


def test_a_vault_in_another_tenant_needs_the_tenant_allowed(emulator):
    emulator.control("PUT", "/vaults/partner/secrets/shared", {"value": "from-the-partner"})
    url = emulator.info["vaults"]["partner"]

    refused = SecretClient(url, credential(emulator), **vault_options(emulator))
    with pytest.raises(ClientAuthenticationError, match="additionally_allowed_tenants"):
        refused.get_secret("shared")

    emulator.control("DELETE", "/requests")
    allowed = SecretClient(url, credential(emulator, additionally_allowed_tenants=[OTHER_TENANT]), **vault_options(emulator))
    assert allowed.get_secret("shared").value == "from-the-partner"
    tenants = {r["path"].split("/")[1] for r in token_requests(emulator)}
    assert tenants == {OTHER_TENANT}


def test_a_cae_claims_challenge_gets_a_token_with_the_claims(emulator):
    emulator.control("PUT", "/vaults/main/secrets/session", {"value": "v1"})
    client = SecretClient(emulator.info["vaults"]["main"], credential(emulator), **vault_options(emulator))
    assert client.get_secret("session").value == "v1"

    claims = emulator.control("POST", "/cae-revocation")["claims"]
    emulator.control("PUT", "/vaults/main/secrets/session", {"value": "v2"})
    emulator.control("DELETE", "/requests")
    assert client.get_secret("session").value == "v2"

    log = emulator.control("GET", "/requests")
    challenged = [r for r in log if r["endpoint"] == "keyvault_get" and r["status"] == 401]
    assert challenged, "the vault sent the claims challenge"
    entra = token_requests(emulator)
    assert len(entra) == 1 and "claims" in entra[0]["form_keys"], entra
    assert json.loads(claims)["access_token"]["nbf"]["essential"] is True
