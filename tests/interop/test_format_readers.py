"""The sidecar's App Configuration output read back by the parsers its users run: `env` by
python-dotenv, `yaml` by PyYAML, `properties` by java.util.Properties itself (`java`, 11 or later, on PATH:
ReadProperties.java), `json` by the standard library. Every value of the corpus must come back exactly, under the key
docs/app-configuration.md says; `files` writes each value as is.

Run: python3 -m pip install -r tests/interop/requirements.txt
     cargo build --workspace && python3 -m pytest tests/interop -q
"""

import io
import json
import re
from pathlib import Path

import os
import shutil
import subprocess

import dotenv
import pytest
import yaml
from emulator_process import running
from sidecar_process import Store, config, emulator_args, run_once

# Values that trip readers: quoting, expansion, escapes, line breaks, YAML and properties syntax.
VALUES = [
    "", "plain", "with space", "  leading and trailing  ", "tab\there", "\t", " ",
    "new\nline", "crlf\r\nend", "cr\ronly", "trailing newline\n", "\n",
    'double "quotes"', "single 'quotes'", "'", '"', "\\'", '\\"', "back`tick`", "`id`",
    "$HOME", "${HOME}", "${HOME:-x}", "${:-$}", "$$", "\\$", "$", "${", "}",
    "a\\b", "trailing\\", "\\n literal", "\\\\", "\\",
    "#hash", "a #comment", "key=value", "=", "a: b", "!bang", "-dash", "? q", "@at", "%pct", "*star",
    "&anchor", "|pipe", ">fold", "[1, 2]", "{a: b}", "null", "true", "123", "0x1F", "~", "export X=1",
    "ü€😀", "\u2028sep\u2029", "\x01ctl", "\x7fdel", "\x85nel", "\ufeffbom",
]
LONG_KEY = "long-" + "k" * 1500
# Keys beyond v:NN that properties and the nesting formats must keep as they are.
ODD_KEYS = {LONG_KEY: "long key value", "sp ace=eq:col#h!b": "odd key", "ünï:cödé": "unicode key"}


# Values stored with a JSON content type: subtrees in json/yaml, flattened (key:sub, key:0) in
# env and properties, scalars as their JSON text, null empty, {} and [] nothing at all.
JSON_VALUES = {
    "j:obj": {"level": "warn", "sinks": ["console", {"file": "/var/log/x"}], "n": 3, "on": True, "none": None,
              "quote\"d": "a\nb", "empty": {}, "list": [], "ü": "€"},
    "j:long": {"k" * 1200: "long key inside JSON", "x": [{"k" * 1100: 1}]},
}


def flat_json(key, value, out):
    """The .NET JsonKeyValueAdapter's flattening (its JsonFlattener), as docs/app-configuration.md states it."""
    if isinstance(value, dict):
        for k, v in value.items():
            flat_json(f"{key}:{k}", v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            flat_json(f"{key}:{i}", v, out)
    elif value is None:
        out[key] = ""
    elif isinstance(value, bool):
        out[key] = "true" if value else "false"
    else:
        out[key] = value if isinstance(value, str) else json.dumps(value)


def flat_settings():
    out = dict(settings())
    for key, value in JSON_VALUES.items():
        flat_json(key, value, out)
    return out


def nested_settings():
    return nested({**settings(), **JSON_VALUES})


def settings():
    corpus = {f"v:{i:02}": v for i, v in enumerate(VALUES)}
    corpus.update(ODD_KEYS)
    return corpus


def env_name(key):
    """docs/app-configuration.md: upper-cased, every character outside [A-Za-z0-9] turned into `_`."""
    return "".join(c.upper() if c.isascii() and c.isalnum() else "_" for c in key)


def nested(flat):
    tree = {}
    for key, value in flat.items():
        node = tree
        *parents, last = key.split(":")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return tree


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The corpus published once in every format: {format: path}."""
    work = tmp_path_factory.mktemp("formats")
    with running(emulator_args(work)) as (proc, info):
        store = Store(proc, info)
        for key, value in settings().items():
            store.set_kv("fmt:" + key, value)
        for key, value in JSON_VALUES.items():
            store.set_kv("fmt:" + key, json.dumps(value), content_type="application/json")
        paths = {"env": "app.env", "properties": "app.properties", "yaml": "app.yaml", "json": "app.json",
                 "files": "files"}
        sources = [{"type": "appconfig", "endpoint": store.url, "select": [{"key": "fmt:*"}],
                    "trim_prefix": ["fmt:"], "path": path, "format": fmt} for fmt, path in paths.items()]
        proc = run_once(work, config(store, work / "out", sources))
        yield {fmt: work / "out" / path for fmt, path in paths.items()}, proc.stderr


def test_env_read_by_python_dotenv_gives_back_every_value(published):
    paths, _ = published
    read = dotenv.dotenv_values(paths["env"])
    expected = {env_name(k): v for k, v in flat_settings().items()}
    assert_same(read, expected)


def test_env_loaded_into_the_environment_by_load_dotenv_gives_back_every_value(published, monkeypatch):
    paths, _ = published
    # load_dotenv resolves ${...} against os.environ too: a HOME set must not leak into values.
    monkeypatch.setenv("HOME", "/home/someone")
    read = dotenv.main.DotEnv(paths["env"], interpolate=True, override=True).dict()
    expected = {env_name(k): v for k, v in flat_settings().items()}
    assert_same(read, expected)


def test_properties_read_by_a_java_properties_reader_give_back_every_value(published):
    paths, _ = published
    java = shutil.which("java")
    if java is None:
        pytest.fail("no `java` on PATH: the properties round trip reads with java.util.Properties itself")
    reader = Path(__file__).with_name("ReadProperties.java")
    proc = subprocess.run([java, str(reader), str(paths["properties"])], capture_output=True, text=True,
                          timeout=120, check=True)
    assert_same(json.loads(proc.stdout), flat_settings())


def test_yaml_read_by_pyyaml_gives_back_every_value_long_keys_included(published):
    paths, _ = published
    read = yaml.safe_load(paths["yaml"].read_text(encoding="utf-8"))
    assert_same(read, nested_settings())


def test_json_read_by_the_standard_library_gives_back_every_value(published):
    paths, _ = published
    read = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert_same(read, nested_settings())


def test_files_hold_every_value_a_file_name_can_carry_and_the_others_are_logged(published):
    paths, logs = published
    root = paths["files"]
    for key, value in settings().items():
        if key in ODD_KEYS:
            # docs/app-configuration.md (format: files): only [A-Za-z0-9._-] segments of at most 255 bytes.
            first = key.split(":")[0]
            assert first not in os.listdir(root), key[:40]
            assert logs.count(f'key="{key}"') == 1, f"{key[:40]} not logged once:\n{logs}"
        else:
            assert (root / key.replace(":", "/")).read_bytes() == value.encode(), key


def assert_same(read, expected):
    diffs = [k for k in sorted(set(read) | set(expected)) if read.get(k) != expected.get(k)]
    assert not diffs, "\n".join(f"{k[:60]!r}: read {read.get(k)!r}, published {expected.get(k)!r}"
                                 for k in diffs)
