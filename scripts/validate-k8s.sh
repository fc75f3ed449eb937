#!/usr/bin/env bash
# Renders k8s/base and every k8s/overlays/* with kustomize and validates each manifest against
# the Kubernetes JSON schemas (strict: unknown fields are errors) with kubernetes-validate
# (PyPI; it ships the schemas, so no network is needed once it is installed).
#
#   bash scripts/validate-k8s.sh            # everything; exit 0 only if all pass
#   bash scripts/validate-k8s.sh FILE...    # validate already-rendered manifests instead
#
# Kubernetes versions: the base and the imds/http overlays use a native sidecar
# (initContainers[].restartPolicy), so they are checked against 1.29 (native sidecars on by
# default) and the newest schema; classic-sidecar is for older clusters and is checked
# against 1.27 too. As a guard that the schemas really know native sidecars, the base must
# FAIL against 1.27.
#
# Rendering: `kubectl kustomize` or a `kustomize` binary when one is on PATH. Neither is
# packaged in the registries CI may reach (Debian's kubernetes-client is 1.20, whose embedded
# kustomize predates `patches`), so without them the script falls back to a small Python
# renderer for the subset of kustomize these manifests use (resources, configMapGenerator from
# files with behavior create/replace and no name hash, labels without selectors, JSON 6902
# patches). When a real kustomize is present the fallback's output is compared with it, so the
# fallback cannot silently drift.
#
# Also runs `azure-secrets-sidecar check` on the config.yaml of each rendering (when built).
#
# Installs into target/k8s-venv only; touches nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATE_VERSION=1.37.0
NATIVE_VERSIONS=(1.29.0 1.37.0)
CLASSIC_VERSIONS=(1.27.0 1.37.0)

venv=target/k8s-venv
installed=$("$venv/bin/kubernetes-validate" --version 2>/dev/null || true)
if [ "$installed" != "$VALIDATE_VERSION" ]; then
  echo "==> installing kubernetes-validate $VALIDATE_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$VALIDATE_VERSION" "PyYAML>=6"
fi
kv() { "$venv/bin/kubernetes-validate" --strict --quiet "$@"; }

if [ $# -gt 0 ]; then
  for v in "${NATIVE_VERSIONS[@]}"; do kv -k "$v" "$@"; done
  echo "OK: $* valid against ${NATIVE_VERSIONS[*]}"
  exit 0
fi

# The fallback renderer: the kustomize subset used under k8s/. Prints multi-document YAML.
fallback_render() {
  "$venv/bin/python" - "$1" <<'PY'
import os, sys, yaml

def load_kustomization(d):
    with open(os.path.join(d, "kustomization.yaml")) as f:
        return yaml.safe_load(f)

def pointer(path):
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]

def apply_op(doc, op):
    *parents, last = pointer(op["path"])
    node = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    kind = op["op"]
    if isinstance(node, list):
        idx = len(node) if last == "-" else int(last)
        if kind == "add":
            node.insert(idx, op["value"])
        elif kind == "remove":
            del node[idx]
        elif kind == "replace":
            node[idx] = op["value"]
        else:
            sys.exit(f"fallback renderer: unsupported JSON patch op {kind}")
    else:
        if kind in ("remove", "replace") and last not in node:
            sys.exit(f"fallback renderer: {kind} of missing path {op['path']}")
        if kind in ("add", "replace"):
            node[last] = op["value"]
        elif kind == "remove":
            del node[last]
        else:
            sys.exit(f"fallback renderer: unsupported JSON patch op {kind}")

def matches(doc, target):
    api = doc.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    checks = {"kind": doc.get("kind"), "name": doc["metadata"].get("name"),
              "group": group, "version": version}
    return all(checks[k] == v for k, v in target.items() if k in checks)

def render(d):
    k = load_kustomization(d)
    supported = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions",
                 "patches", "labels"}
    unknown = set(k) - supported
    if unknown:
        sys.exit(f"fallback renderer: {d}: unsupported kustomization fields {sorted(unknown)}")
    docs = []
    for r in k.get("resources", []):
        p = os.path.join(d, r)
        if os.path.isdir(p):
            docs.extend(render(p))
        else:
            with open(p) as f:
                docs.extend(x for x in yaml.safe_load_all(f) if x)
    if k.get("configMapGenerator") and not k.get("generatorOptions", {}).get("disableNameSuffixHash"):
        # Generators in an overlay inherit the base's option in kustomize; require it where
        # a generator is created, accept it on replace.
        if any(g.get("behavior", "create") == "create" for g in k["configMapGenerator"]):
            sys.exit(f"fallback renderer: {d}: name hash suffixes are not supported")
    for g in k.get("configMapGenerator", []):
        data = {}
        for f in g.get("files", []):
            key, _, path = f.rpartition("=") if "=" in f else (os.path.basename(f), "", f)
            with open(os.path.join(d, path)) as fh:
                data[key] = fh.read()
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}, "data": data}
        behavior = g.get("behavior", "create")
        existing = [x for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"] == g["name"]]
        if behavior == "create":
            docs.append(cm)
        elif behavior == "replace" and existing:
            existing[0]["data"] = data
        else:
            sys.exit(f"fallback renderer: {d}: unsupported generator behavior {behavior}")
    for patch in k.get("patches", []):
        if "path" in patch:
            with open(os.path.join(d, patch["path"])) as f:
                ops = yaml.safe_load(f)
        else:
            ops = yaml.safe_load(patch["patch"])
        if not isinstance(ops, list):
            sys.exit(f"fallback renderer: {d}: only JSON 6902 patches are supported")
        hits = [x for x in docs if matches(x, patch.get("target", {}))]
        if not hits:
            sys.exit(f"fallback renderer: {d}: patch target {patch.get('target')} matches nothing")
        for doc in hits:
            for op in ops:
                apply_op(doc, op)
            for field in ("annotations", "labels"):   # kustomize drops emptied maps
                if doc["metadata"].get(field) == {}:
                    del doc["metadata"][field]
    for spec in k.get("labels", []):
        if spec.get("includeSelectors") or spec.get("includeTemplates"):
            sys.exit(f"fallback renderer: {d}: labels on selectors/templates are not supported")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(spec["pairs"])
    return docs

print(yaml.safe_dump_all(render(sys.argv[1]), sort_keys=True), end="")
PY
}

# Prints the rendering of $1 with a real kustomize, or returns 1 if there is none.
real_render() {
  if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
    kubectl kustomize "$1"
  elif command -v kustomize >/dev/null; then
    kustomize build "$1"
  else
    return 1
  fi
}

# Same documents, same content, whatever the order and formatting.
normalise() {
  "$venv/bin/python" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
docs.sort(key=lambda d: (d["kind"], d["metadata"]["name"]))
print(yaml.safe_dump_all(docs, sort_keys=True), end="")' "$1"
}

out=target/k8s-rendered
rm -rf "$out"
mkdir -p "$out"
status=0
renderer=""
for dir in k8s/base k8s/overlays/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  file="$out/$name.yaml"
  fallback_render "$dir" >"$out/$name.fallback.yaml"
  if real_render "$dir" >"$file" 2>"$out/$name.err"; then
    renderer="kustomize"
    if ! diff -u <(normalise "$file") <(normalise "$out/$name.fallback.yaml") >"$out/$name.diff"; then
      echo "FAIL: $dir: the fallback renderer differs from kustomize (see $out/$name.diff)"
      status=1
    fi
  else
    if [ -s "$out/$name.err" ]; then
      echo "FAIL: $dir: kustomize could not render it:"; cat "$out/$name.err"; status=1; continue
    fi
    renderer="fallback (no kubectl or kustomize on PATH)"
    cp "$out/$name.fallback.yaml" "$file"
  fi

  versions=("${NATIVE_VERSIONS[@]}")
  [ "$name" = classic-sidecar ] && versions=("${CLASSIC_VERSIONS[@]}")
  for v in "${versions[@]}"; do
    if kv -k "$v" "$file"; then
      echo "ok: $dir against Kubernetes $v"
    else
      echo "FAIL: $dir against Kubernetes $v"; status=1
    fi
  done
done

# The sidecar config inside each rendered ConfigMap, checked by the sidecar itself (unknown keys
# and bad values are errors) when the binary is built; the schemas only see an opaque string.
bin=${SIDECAR_BIN:-target/debug/azure-secrets-sidecar}
if [ -x "$bin" ]; then
  for file in "$out"/*.yaml; do
    case $file in *.fallback.yaml|*.config.yaml) continue ;; esac
    name=$(basename "$file" .yaml)
    "$venv/bin/python" -c '
import sys, yaml
cm = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap"
      and d["metadata"]["name"] == "azure-secrets-sidecar-config"]
sys.stdout.write(cm[0]["data"]["config.yaml"])' "$file" >"$out/$name.config.yaml"
    # Placeholders for what the workload-identity webhook injects in the pod.
    if AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/azure-identity-token \
       AZURE_CLIENT_ID=00000000-0000-0000-0000-000000000000 \
       AZURE_TENANT_ID=00000000-0000-0000-0000-000000000000 \
       "$bin" check --config "$out/$name.config.yaml" >/dev/null; then
      echo "ok: $name: the sidecar accepts its config.yaml"
    else
      echo "FAIL: $name: the sidecar rejects its config.yaml"; status=1
    fi
  done
else
  echo "note: $bin not built; the sidecar configs were not checked (cargo build first)"
fi

# Guard: the schemas must know native sidecars, so the base cannot pass as a 1.27 manifest.
if kv --no-warn -k 1.27.0 "$out/base.yaml" >/dev/null 2>&1; then
  echo "FAIL: k8s/base validated against 1.27; the schema check is not seeing restartPolicy"
  status=1
else
  echo "ok: k8s/base (native sidecar) is rejected by the 1.27 schema, as it must be"
fi

echo "renderer: $renderer; validator: kubernetes-validate $VALIDATE_VERSION (strict)"
[ "$status" -eq 0 ] && echo "OK: all Kubernetes manifests valid" || echo "FAILED"
exit "$status"
