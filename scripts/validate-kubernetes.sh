#!/usr/bin/env bash
# Validates the Kubernetes examples against the API schemas of the oldest and
# the newest Kubernetes version that kubernetes-validate ships, in strict mode
# (an unknown or misspelt field is an error, not silently dropped by the API
# server). The oldest is never below 1.29: native sidecars (init containers
# with restartPolicy: Always) need it.
#
# Each shape is a kustomize directory (examples/kubernetes/*/); what is
# validated is what `kubectl apply -k` would send: kustomize's output. That
# output is also checked for what the directory promises: the config's
# ConfigMap carries a hash of its content in its name and the pods mount it
# by that name (so a config change rolls them), nothing is mounted with
# subPath, and every image is pinned by digest.
#
# The other YAML files of a shape (servicemonitor.yaml) are validated on
# their own. kubernetes-validate has no schema for a custom resource such as
# the Prometheus Operator's ServiceMonitor (it warns and passes it): those
# are checked here against the ServiceMonitor fields the examples use, each
# one as the operator's CRD defines it, with no other field allowed.
#   bash scripts/validate-kubernetes.sh
set -euo pipefail
cd "$(dirname "$0")/.."

min=1.29

# Run as a module of the same python3 that pip installs it for, so a fresh
# install works without a PATH change.
kv() { python3 -m kubernetes_validate "$@"; }
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  python3 -m pip install -q kubernetes-validate
fi

# kustomize: kubectl's own (`kubectl kustomize`), or the kustomize binary.
# Without either, Debian's kubectl (package kubernetes-client) is installed.
if command -v kubectl >/dev/null 2>&1; then
  render() { kubectl kustomize "$1"; }
elif command -v kustomize >/dev/null 2>&1; then
  render() { kustomize build "$1"; }
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
  render() { kubectl kustomize "$1"; }
else
  echo "validate-kubernetes: needs kubectl (kubectl kustomize) or kustomize" >&2
  exit 1
fi

# The versions whose schemas the installed package carries, oldest first.
mapfile -t versions < <(python3 -c '
from kubernetes_validate.utils import all_versions
print("\n".join(all_versions()))' | sort -V)
if [ ${#versions[@]} -eq 0 ]; then
  echo "validate-kubernetes: kubernetes-validate lists no versions" >&2
  exit 1
fi
newest=${versions[-1]}
oldest=
for v in "${versions[@]}"; do
  if [ "$(printf '%s\n%s\n' "$min" "$v" | sort -V | head -1)" = "$min" ]; then
    oldest=$v
    break
  fi
done
if [ -z "$oldest" ]; then
  echo "validate-kubernetes: no schemas for Kubernetes $min or newer (newest: $newest)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Splits YAML files into the documents kubernetes-validate knows (written to
# DIR/core.yaml) and checks the ServiceMonitors itself. With
# --rendered=SHAPE, the file is kustomize's output for SHAPE, also checked
# for what the shapes promise.
check_py() {
  python3 - "$@" <<'EOF'
import re, sys
import jsonschema, yaml

out_dir, files = sys.argv[1], sys.argv[2:]
rendered = None
if files and files[0].startswith("--rendered="):
    rendered = files[0].split("=", 1)[1]
    files = files[1:]

DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": STRINGS,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
# monitoring.coreos.com/v1 ServiceMonitor: the fields these examples use.
SERVICE_MONITOR = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": STRINGS, "annotations": STRINGS},
        },
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "selector": SELECTOR,
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"},
                    },
                }},
            },
        },
    },
}

errors = []
core = []
for f in files:
    with open(f) as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d]
    services = [d for d in docs if d.get("kind") == "Service"]
    for d in docs:
        if d.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            for e in jsonschema.Draft202012Validator(SERVICE_MONITOR).iter_errors(d):
                path = ".".join(str(p) for p in e.absolute_path)
                errors.append(f"{f}: {d.get('kind')}: {path}: {e.message}")
            # It must find a Service of the same file, by its labels and port.
            spec = d.get("spec", {})
            want = spec.get("selector", {}).get("matchLabels", {})
            found = [s for s in services
                     if want and all(s["metadata"].get("labels", {}).get(k) == v for k, v in want.items())]
            if not found:
                errors.append(f"{f}: the ServiceMonitor selects no Service of this file")
            for ep in spec.get("endpoints", []):
                if not any(ep.get("port") == p.get("name") for s in found for p in s["spec"]["ports"]):
                    errors.append(f"{f}: the ServiceMonitor scrapes port {ep.get('port')!r}, which its Service lacks")
        else:
            core.append(d)

    if rendered:
        f = f"kustomize build {rendered}"
        def walk(v, path=""):
            if isinstance(v, dict):
                for k, x in v.items():
                    if k == "subPath":
                        errors.append(f"{f}: subPath at {path}: mount the whole directory, so an update is seen")
                    if k == "image" and isinstance(x, str) and not re.search(r"@sha256:[0-9a-f]{64}$", x):
                        errors.append(f"{f}: image {x} is not pinned by digest")
                    walk(x, f"{path}.{k}")
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    walk(x, f"{path}[{i}]")
        walk(docs)
        maps = [d["metadata"]["name"] for d in docs if d.get("kind") == "ConfigMap"]
        generated = [m for m in maps if re.fullmatch(r"authback-config-[a-z0-9]{10}", m)]
        if len(generated) != 1:
            errors.append(f"{f}: no ConfigMap authback-config-<hash> (a configMapGenerator with the name hash): {maps}")
        for d in docs:
            if d.get("kind") in ("Deployment", "StatefulSet"):
                vols = d["spec"]["template"]["spec"].get("volumes", [])
                refs = [v["configMap"]["name"] for v in vols if "configMap" in v]
                if not refs or any(r not in generated for r in refs):
                    errors.append(f"{f}: {d['kind']} mounts {refs}, not the generated {generated}")

with open(f"{out_dir}/core.yaml", "w") as fh:
    yaml.safe_dump_all(core, fh, sort_keys=False)
for e in errors:
    print(f"validate-kubernetes: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
}

echo "kubernetes-validate $(kv --version 2>&1 | awk '{print $NF}'):" \
  "Kubernetes $oldest and $newest"
status=0
checked=()
n=0
validate() { # files to validate (the first may be --rendered=DIR)
  n=$((n + 1))
  mkdir -p "$tmp/$n"
  check_py "$tmp/$n" "$@" || status=1
  for v in $(printf '%s\n' "$oldest" "$newest" | sort -uV); do
    kv --strict --quiet -k "$v" "$tmp/$n/core.yaml" || status=1
  done
}

shapes=0
for k in examples/kubernetes/*/kustomization.yaml; do
  dir=$(dirname "$k")
  name=$(basename "$dir")
  out="$tmp/$name.yaml"
  if ! render "$dir" >"$out"; then
    echo "validate-kubernetes: kustomize cannot build $dir" >&2
    status=1
    continue
  fi
  validate --rendered="$dir" "$out"
  checked+=("$dir (kustomize)")
  shapes=$((shapes + 1))
  # The shape's files that kustomize does not read: optional extras.
  for f in "$dir"/*.yaml; do
    base=$(basename "$f")
    [ "$base" = kustomization.yaml ] && continue
    if ! grep -Eq "^  - $base\$" "$k"; then
      validate "$f"
      checked+=("$f")
    fi
  done
done
for f in examples/kubernetes/*.yaml; do
  [ -e "$f" ] || continue
  validate "$f"
  checked+=("$f")
done
if [ "$shapes" -eq 0 ]; then
  echo "validate-kubernetes: no examples/kubernetes/*/kustomization.yaml" >&2
  exit 1
fi
if [ "$status" -eq 0 ]; then
  printf 'ok: %s\n' "${checked[@]}"
fi
exit "$status"
