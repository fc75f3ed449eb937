"""Contract test: the emulator's AKS identity-binding token proxy as azure-identity's
WorkloadIdentityCredential uses it (`enable_azure_proxy=True` with AZURE_KUBERNETES_TOKEN_PROXY,
AZURE_KUBERNETES_SNI_NAME, AZURE_KUBERNETES_CA_FILE): TLS naming the SNI server, trusting the
proxy's own CA, the token request under the proxy URL. Every request stays on 127.0.0.1.
"""

import pytest
from emulator_process import EmulatorProcess, running
from azure.identity import WorkloadIdentityCredential

SNI = "identity-binding.aks.localhost"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    work = tmp_path_factory.mktemp("emulator")
    with running(["--state-dir", str(work / "state"), "--vault", "main", "--token-proxy-sni", SNI]) as (proc, info):
        yield EmulatorProcess(proc, info)


def test_workload_identity_gets_a_token_through_the_token_proxy(emulator, monkeypatch):
    info = emulator.info
    monkeypatch.setenv("AZURE_KUBERNETES_TOKEN_PROXY", info["token_proxy_url"])
    monkeypatch.setenv("AZURE_KUBERNETES_SNI_NAME", SNI)
    monkeypatch.setenv("AZURE_KUBERNETES_CA_FILE", info["token_proxy_ca_file"])
    emulator.control("DELETE", "/requests")
    credential = WorkloadIdentityCredential(
        tenant_id=info["tenant_id"],
        client_id=info["client_id"],
        token_file_path=info["federated_token_file"],
        # Never reached: the request goes to the proxy. A loopback port nothing listens on,
        # so a routing regression fails here instead of reaching Entra ID.
        authority="https://127.0.0.1:1",
        disable_instance_discovery=True,
        enable_azure_proxy=True,
    )

    token = credential.get_token("https://vault.azure.net/.default")

    assert token.token
    entra = [r for r in emulator.control("GET", "/requests") if r["endpoint"] == "aad" and r["method"] == "POST"]
    # TLS names the server SNI (the certificate is for that name only); Host is the proxy's.
    assert [r["headers"].get("host") for r in entra] == [info["token_proxy_url"].split("//")[1]]
    assert entra[0]["path"] == f"/{info['tenant_id']}/oauth2/v2.0/token"
