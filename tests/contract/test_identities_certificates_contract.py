"""Contract tests for the emulator's identity endpoints and Key Vault certificates and keys,
driven by Microsoft's Python SDK: CertificateCredential (a client assertion the emulator
verifies), ManagedIdentityCredential against the App Service and Azure Arc endpoints, and
azure-keyvault-certificates / azure-keyvault-keys / azure-keyvault-secrets reading what the
emulator made.

The Azure Arc flow of the SDK (MSAL) reads the challenge key file only from the agent's own
directory, /var/opt/azcmagent/tokens; the emulator is pointed there. Creating it needs root
(the case on the project's machines and in CI); without it the Arc test fails and says why.

Every request stays on 127.0.0.1: ManagedIdentityCredential is only built with
IDENTITY_ENDPOINT set, which selects App Service or Arc before IMDS is ever considered, and the
test checks which credential the SDK picked.
"""

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.identity import CertificateCredential, ManagedIdentityCredential
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from emulator_process import running
from test_keyvault_contract import AZURE_IDENTITY_VARS, Emulator

VAULT = "contract"  # the name Emulator (shared with the Key Vault contract tests) expects
ARC_KEY_DIR = Path("/var/opt/azcmagent/tokens")


def arc_key_dir_available(created):
    """Create the agent's directory if needed (noting what was created, for removal)."""
    try:
        created.extend(d for d in (ARC_KEY_DIR, ARC_KEY_DIR.parent) if not d.exists())
        ARC_KEY_DIR.mkdir(parents=True, exist_ok=True)
        probe = ARC_KEY_DIR / f"probe-{os.getpid()}.tmp"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    work = tmp_path_factory.mktemp("emulator-certs")
    args = ["--state-dir", str(work / "state"), "--vault", VAULT, "--token-lifetime", "1h"]
    created = []
    if arc_key_dir_available(created):
        args += ["--arc-key-dir", str(ARC_KEY_DIR)]
    try:
        with running(args) as (proc, info):
            yield Emulator(proc, info)
    finally:
        for d in created:  # innermost first; only if empty
            try:
                d.rmdir()
            except OSError:
                pass


@pytest.fixture
def clean_env(monkeypatch):
    for var in AZURE_IDENTITY_VARS + ("AZURE_CLIENT_CERTIFICATE_PATH",):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def certificate_credential(emulator):
    info = emulator.info
    return CertificateCredential(
        info["tenant_id"],
        info["client_id"],
        certificate_path=info["client_certificate_file"],
        authority=info["authority_url"],
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
    )


def kv_kwargs(emulator):
    return {"verify_challenge_resource": False, "connection_verify": emulator.ca_file}


def last_assertion_header(emulator):
    assertion = emulator.control("GET", "/last-assertion")["assertion"]
    head = assertion.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def test_certificate_credential_signs_an_assertion_the_emulator_verifies(emulator, certificate_credential):
    token = certificate_credential.get_token("https://vault.azure.net/.default")
    assert token.token
    header = last_assertion_header(emulator)
    assert header["alg"] in ("RS256", "PS256")
    assert "x5t" in header or "x5t#S256" in header
    entra = [r for r in emulator.requests() if r["endpoint"] == "aad" and r["method"] == "POST"]
    assert entra[-1]["status"] == 200
    assert {"client_assertion", "client_assertion_type", "client_id"} <= set(entra[-1]["form_keys"])


def test_a_certificate_the_app_does_not_know_is_refused_with_700027(emulator, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    import datetime

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes_sha256())
    )
    pem = tmp_path / "stranger.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    info = emulator.info
    credential = CertificateCredential(
        info["tenant_id"], info["client_id"], certificate_path=str(pem), authority=info["authority_url"],
        disable_instance_discovery=True, connection_verify=emulator.ca_file,
    )
    with pytest.raises(ClientAuthenticationError) as raised:
        credential.get_token("https://vault.azure.net/.default")
    assert "AADSTS700027" in str(raised.value)


def hashes_sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def test_managed_identity_on_app_service_sends_the_identity_header(emulator, clean_env):
    header = Path(emulator.info["identity_header_file"]).read_text()
    clean_env.setenv("IDENTITY_ENDPOINT", emulator.info["app_service_endpoint"])
    clean_env.setenv("IDENTITY_HEADER", header)
    before = emulator.counts()["app_service"]
    credential = ManagedIdentityCredential()
    assert type(credential._credential).__name__ == "AppServiceCredential"
    token = credential.get_token("https://vault.azure.net/.default")
    assert token.token and token.expires_on > 0
    assert emulator.counts()["app_service"] == before + 1
    request = [r for r in emulator.requests() if r["endpoint"] == "app_service"][-1]
    assert "api-version=2019-08-01" in request["query"] and request["status"] == 200
    # The token reads Key Vault.
    client = SecretClient(emulator.vault_url, credential, **kv_kwargs(emulator))
    emulator.control("PUT", f"/vaults/{VAULT}/secrets/app-service", {"value": "from-app-service"})
    assert client.get_secret("app-service").value == "from-app-service"


def test_managed_identity_on_app_service_with_a_stale_header_fails(emulator, clean_env):
    clean_env.setenv("IDENTITY_ENDPOINT", emulator.info["app_service_endpoint"])
    clean_env.setenv("IDENTITY_HEADER", "stale")
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token("https://vault.azure.net/.default")


def test_managed_identity_on_azure_arc_answers_the_challenge(emulator, clean_env):
    if Path(emulator.info["arc_key_dir"]) != ARC_KEY_DIR:
        pytest.fail(f"{ARC_KEY_DIR} cannot be created here (needs root); the SDK reads Arc key files only from there")
    clean_env.setenv("IDENTITY_ENDPOINT", emulator.info["arc_identity_endpoint"])
    clean_env.setenv("IMDS_ENDPOINT", emulator.info["arc_imds_endpoint"])
    credential = ManagedIdentityCredential()
    assert type(credential._credential).__name__ == "AzureArcCredential"
    token = credential.get_token("https://vault.azure.net/.default")
    assert token.token
    arc = [r for r in emulator.requests() if r["endpoint"] == "arc"]
    assert [r["status"] for r in arc[-2:]] == [401, 200]
    assert [r["auth"] for r in arc[-2:]] == ["none", "basic"]
    assert not list(ARC_KEY_DIR.glob("*.key")) or all(p.stat().st_size <= 4096 for p in ARC_KEY_DIR.glob("*.key"))


ARC_USER_ASSIGNED = "a4c0a4c0-0000-4000-8000-00000000a4c0"


@pytest.fixture
def arc_user_assigned(emulator, clean_env):
    if Path(emulator.info["arc_key_dir"]) != ARC_KEY_DIR:
        pytest.fail(f"{ARC_KEY_DIR} cannot be created here (needs root); the SDK reads Arc key files only from there")
    clean_env.setenv("IDENTITY_ENDPOINT", emulator.info["arc_identity_endpoint"])
    clean_env.setenv("IMDS_ENDPOINT", emulator.info["arc_imds_endpoint"])
    before = emulator.control("GET", "/identities/imds")
    emulator.control("PUT", "/identities/imds", before + [{
        "client_id": ARC_USER_ASSIGNED, "object_id": "0b1ec700-0000-4000-8000-00000000a4c0",
        "msi_res_id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/arc-ua",
    }])
    yield
    emulator.control("PUT", "/arc-agent", {"legacy": False})
    emulator.control("PUT", "/identities/imds", before)


def test_azure_arc_user_assigned_identity_is_echoed_as_the_sdk_checks(emulator, arc_user_assigned):
    # A current agent serves the selected identity and echoes it; azure-identity accepts that.
    token = ManagedIdentityCredential(client_id=ARC_USER_ASSIGNED).get_token("https://vault.azure.net/.default")
    assert token.token
    arc = [r for r in emulator.requests() if r["endpoint"] == "arc"]
    assert f"client_id={ARC_USER_ASSIGNED}" in arc[-1]["query"]


def test_a_legacy_azure_arc_agent_ignoring_the_selector_is_refused_by_the_sdk(emulator, arc_user_assigned):
    emulator.control("PUT", "/arc-agent", {"legacy": True})
    with pytest.raises(ClientAuthenticationError) as raised:
        ManagedIdentityCredential(client_id=ARC_USER_ASSIGNED).get_token("https://vault.azure.net/.default")
    assert "did not confirm the requested user-assigned managed identity" in str(raised.value)


@pytest.mark.parametrize("spec", [
    {"content": "pkcs12", "key": "rsa", "pfx_encryption": "legacy"},
    {"content": "pkcs12", "key": "ec", "pfx_encryption": "aes"},
    {"content": "pem", "key": "rsa"},
])
def test_certificates_and_their_backing_secrets_read_in_the_sdks(emulator, certificate_credential, spec):
    name = "cert-" + "-".join(spec.values())
    made = emulator.control("PUT", f"/vaults/{VAULT}/certificates/{name}", spec)
    certs = CertificateClient(emulator.vault_url, certificate_credential, **kv_kwargs(emulator))
    secrets = SecretClient(emulator.vault_url, certificate_credential, **kv_kwargs(emulator))

    certificate = certs.get_certificate(name)
    assert certificate.properties.version == made["version"]
    assert certificate.secret_id == f"{emulator.vault_url}/secrets/{name}/{made['version']}"
    assert certificate.key_id == f"{emulator.vault_url}/keys/{name}/{made['version']}"
    assert certificate.properties.x509_thumbprint == hashlib.sha1(certificate.cer).digest()
    leaf = x509.load_der_x509_certificate(certificate.cer)

    secret = secrets.get_secret(name)
    assert secret.properties.managed is True
    assert secret.properties.key_id == certificate.key_id
    if spec["content"] == "pkcs12":
        assert secret.properties.content_type == "application/x-pkcs12"
        key, cert, extra = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    else:
        assert secret.properties.content_type == "application/x-pem-file"
        key = serialization.load_pem_private_key(secret.value.encode(), None)
        cert = x509.load_pem_x509_certificates(secret.value.encode())[0]
    assert cert.public_bytes(serialization.Encoding.DER) == certificate.cer
    assert key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("kty", ["rsa", "ec"])
def test_keys_read_in_the_keys_sdk(emulator, certificate_credential, kty):
    name = f"key-{kty}"
    made = emulator.control("PUT", f"/vaults/{VAULT}/keys/{name}", {"kty": kty})
    keys = KeyClient(emulator.vault_url, certificate_credential, **kv_kwargs(emulator))
    key = keys.get_key(name)
    assert key.properties.version == made["version"]
    assert key.id == f"{emulator.vault_url}/keys/{name}/{made['version']}"
    assert key.key_type == kty.upper()
    if kty == "rsa":
        assert key.key.n and key.key.e == b"\x01\x00\x01"
    else:
        assert key.key.crv == "P-256" and len(key.key.x) == 32 and len(key.key.y) == 32


def test_a_certificates_key_is_its_leafs_public_key(emulator, certificate_credential):
    emulator.control("PUT", f"/vaults/{VAULT}/certificates/shared-key", {"key": "rsa"})
    certs = CertificateClient(emulator.vault_url, certificate_credential, **kv_kwargs(emulator))
    keys = KeyClient(emulator.vault_url, certificate_credential, **kv_kwargs(emulator))
    leaf = x509.load_der_x509_certificate(certs.get_certificate("shared-key").cer)
    key = keys.get_key("shared-key")
    assert key.properties.managed is True
    numbers = leaf.public_key().public_numbers()
    assert int.from_bytes(key.key.n, "big") == numbers.n
    assert int.from_bytes(key.key.e, "big") == numbers.e


def test_missing_keys_and_certificates_raise_not_found(emulator, certificate_credential):
    keys = KeyClient(emulator.vault_url, certificate_credential, **kv_kwargs(emulator))
    certs = CertificateClient(emulator.vault_url, certificate_credential, **kv_kwargs(emulator))
    with pytest.raises(ResourceNotFoundError) as raised:
        keys.get_key("no-such-key")
    assert raised.value.error.code == "KeyNotFound"
    with pytest.raises(ResourceNotFoundError) as raised:
        certs.get_certificate("no-such-certificate")
    assert raised.value.error.code == "CertificateNotFound"


def sni_credential(emulator, path, send_chain):
    info = emulator.info
    return CertificateCredential(
        info["tenant_id"], info["client_id"], certificate_path=str(path), authority=info["authority_url"],
        disable_instance_discovery=True, connection_verify=emulator.ca_file, send_certificate_chain=send_chain,
    )


def test_subject_name_and_issuer_trusts_the_chain_the_sdk_sends_in_x5c(emulator):
    # The app trusts the subject of this certificate from its issuer; its thumbprint is not registered.
    path = emulator.info["sni_client_certificate_file"]
    token = sni_credential(emulator, path, True).get_token("https://vault.azure.net/.default")
    assert token.token
    header = last_assertion_header(emulator)
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
    assert len(chain) == 2 and chain[0].issuer == chain[1].subject
    with pytest.raises(ClientAuthenticationError) as raised:
        sni_credential(emulator, path, False).get_token("https://vault.azure.net/.default")
    assert "AADSTS700027" in str(raised.value)


def test_subject_name_and_issuer_refuses_a_chain_from_another_issuer(emulator, tmp_path):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID
    import datetime

    registered = x509.load_pem_x509_certificates(Path(emulator.info["sni_client_certificate_file"]).read_bytes())[0]
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else's CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder().subject_name(registered.subject).issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    pem = tmp_path / "same-subject-other-issuer.pem"
    pem.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(ClientAuthenticationError) as raised:
        sni_credential(emulator, pem, True).get_token("https://vault.azure.net/.default")
    assert "AADSTS7000213" in str(raised.value)
