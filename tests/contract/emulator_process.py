"""The emulator as the contract tests run it: the `azure-emulator` binary (crates/emulator;
$EMULATOR_BIN, default target/debug/azure-emulator) in a subprocess, its address line,
and its control API. Importing this module also keeps the SDKs on loopback: no proxies.
"""

import contextlib
import json
import os
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("EMULATOR_BIN", str(REPO / "target" / "debug" / "azure-emulator"))
STARTUP_TIMEOUT = 30

# The SDK must never reach a real endpoint: no proxies, loopback only.
for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(var, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"


class EmulatorProcess:
    """The running `emulator` subprocess, its address line, and its control API."""

    def __init__(self, proc, info):
        self.proc = proc
        self.info = info
        self.ca_file = info["ca_file"]

    def control(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.info["control_url"] + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            text = resp.read().decode()
            return json.loads(text) if text else None


def read_address_line(proc):
    """The one JSON line the emulator prints once listening, within a deadline."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(line=proc.stdout.readline()), daemon=True)
    thread.start()
    thread.join(STARTUP_TIMEOUT)
    line = result.get("line")
    if not line:
        proc.kill()
        raise RuntimeError(f"emulator printed no address line; stderr:\n{proc.stderr.read()}")
    return json.loads(line)


@contextlib.contextmanager
def running(args):
    """`emulator ARGS...` until the block ends: yields (process, address line)."""
    if not os.path.exists(BIN):
        pytest.fail(f"no emulator binary at {BIN}: run `cargo build --workspace` or set EMULATOR_BIN")
    proc = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc, read_address_line(proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
