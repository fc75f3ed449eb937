"""The emulator with one App Configuration store, and the sidecar's binary ($SIDECAR_BIN,
default target/debug/azure-secrets-sidecar) run against it with a clean environment. Every
address is 127.0.0.1."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from emulator_process import REPO, EmulatorProcess

SIDECAR_BIN = os.environ.get("SIDECAR_BIN", str(REPO / "target" / "debug" / "azure-secrets-sidecar"))
STORE = "interop"


class Store(EmulatorProcess):
    """The emulator, seen through its one store."""

    def __init__(self, proc, info):
        super().__init__(proc, info)
        self.url = info["appconfig_stores"][STORE]

    def set_kv(self, key, value, label=None, content_type=None):
        body = {"key": key, "label": label, "value": value, "content_type": content_type}
        return self.control("PUT", f"/stores/{STORE}/kv", body)["etag"]

    def create_snapshot(self, name, filters):
        self.control("PUT", f"/stores/{STORE}/snapshots/{name}", {"filters": filters, "composition_type": "key"})


def emulator_args(work):
    return ["--state-dir", str(work / "state"), "--store", STORE, "--token-lifetime", "1h"]


def config(store, out, sources, interval="30s"):
    """A sidecar config: workload identity against the emulator, its CA, `sources` (a list of
    dicts, JSON being YAML)."""
    info = store.info
    doc = {
        "identity": {
            "mode": "workload",
            "client_id": info["client_id"],
            "tenant_id": info["tenant_id"],
            "federated_token_file": info["federated_token_file"],
            "authority_host": info["authority_url"],
        },
        "tls": {"ca_file": store.ca_file},
        "sync": {"interval": interval, "jitter": 0, "min_backoff": "100ms", "max_backoff": "1s",
                 "request_timeout": "5s"},
        "output": {"dir": str(out)},
        "serve": {"listen": "127.0.0.1:0"},
        "health": {"listen": "127.0.0.1:0"},
        "log": {"level": "debug"},
        "sources": sources,
    }
    return json.dumps(doc, indent=2)


def run_once(work, text):
    """`run --once` with `text` as config; the completed process (stderr holds the logs)."""
    if not os.path.exists(SIDECAR_BIN):
        pytest.fail(f"no sidecar binary at {SIDECAR_BIN}: run `cargo build` or set SIDECAR_BIN")
    path = Path(work) / "config.yaml"
    path.write_text(text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run([SIDECAR_BIN, "run", "--config", str(path), "--once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"sidecar --once exited {proc.returncode}:\n{proc.stderr}"
    return proc
