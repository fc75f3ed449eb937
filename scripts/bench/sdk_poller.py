"""The usual alternative to the sidecar, for the benchmark: a loop written the way the Azure SDK
samples write it. DefaultAzureCredential (here: workload identity from the standard environment
variables) and SecretClient; every interval, list the vault's secrets, GET each one and write it
to a file named after it.

Environment: VAULT_URL, OUT_DIR, INTERVAL (seconds), CA_FILE (the emulator's CA), plus the
workload identity variables AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and
AZURE_AUTHORITY_HOST. Prints one JSON line per finished poll on stdout, for the benchmark.

Never reaches anything but the emulator: managed identity is excluded (so no IMDS probe of
169.254.169.254; AZURE_POD_IDENTITY_AUTHORITY_HOST also points IMDS at the emulator in case),
as are the developer credentials (Azure CLI, PowerShell, VS Code, ...), and the benchmark runs
it in a network namespace that has only a loopback interface.
"""

import json
import os
import sys
import time
from pathlib import Path

from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient


def main():
    vault_url = os.environ["VAULT_URL"]
    out = Path(os.environ["OUT_DIR"])
    interval = float(os.environ.get("INTERVAL", "30"))
    ca_file = os.environ["CA_FILE"]
    out.mkdir(parents=True, exist_ok=True)

    credential = DefaultAzureCredential(
        exclude_managed_identity_credential=True,
        exclude_environment_credential=True,
        exclude_shared_token_cache_credential=True,
        exclude_cli_credential=True,
        exclude_developer_cli_credential=True,
        exclude_powershell_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_interactive_browser_credential=True,
        connection_verify=ca_file,
    )
    # The vault is 127.0.0.1, not *.vault.azure.net: the challenge's resource cannot match it.
    client = SecretClient(vault_url, credential, verify_challenge_resource=False, connection_verify=ca_file)

    polls = 0
    while True:
        started = time.time()
        count = 0
        for props in client.list_properties_of_secrets():
            if not props.enabled:
                continue
            secret = client.get_secret(props.name)
            (out / props.name).write_text(secret.value)
            count += 1
        polls += 1
        print(json.dumps({"poll": polls, "secrets": count, "started": started, "ended": time.time()}), flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
