#!/usr/bin/env bash
# Validates the Kubernetes examples against the API schemas of the oldest and
# the newest Kubernetes version that kubernetes-validate ships, in strict mode
# (an unknown or misspelt field is an error, not silently dropped by the API
# server). The oldest is never below 1.29: native sidecars (init containers
# with restartPolicy: Always) need it.
#   bash scripts/validate-kubernetes.sh
set -euo pipefail
cd "$(dirname "$0")/.."

files=(examples/kubernetes/*.yaml)
min=1.29

# Run as a module of the same python3 that pip installs it for, so a fresh
# install works without a PATH change.
kv() { python3 -m kubernetes_validate "$@"; }
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  python3 -m pip install -q kubernetes-validate
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

echo "kubernetes-validate $(kv --version 2>&1 | awk '{print $NF}'):" \
  "Kubernetes $oldest and $newest"
status=0
for v in $(printf '%s\n' "$oldest" "$newest" | sort -uV); do
  kv --strict --quiet -k "$v" "${files[@]}" || status=1
done
if [ "$status" -eq 0 ]; then
  echo "ok: ${files[*]}"
fi
exit "$status"
