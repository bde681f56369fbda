#!/usr/bin/env bash
# Pins the Dockerfile's base images by digest.
#
# Every base image is named in a global `ARG <NAME>_IMAGE=<image>:<tag>` line
# (optionally already followed by `@sha256:<digest>`). This script asks the
# registry which digest the tag points to now and rewrites each default to
# `<image>:<tag>@sha256:<digest>`. A build then fetches exactly the bytes
# that were reviewed, however the tag moves; the tag stays in the line so
# the next run knows what to resolve again.
#
# Run it to take in new base images (security fixes, a new Rust), look at
# the diff, build and test the image, then commit the Dockerfile:
#   bash scripts/pin-images.sh            # rewrites ./Dockerfile
#   bash scripts/pin-images.sh path/to/Dockerfile
#
# Needs registry access and one of:
#   crane (go-containerregistry):  crane digest rust:1-bookworm
#   docker with buildx:            docker buildx imagetools inspect rust:1-bookworm
# Both give the digest of the multi-platform index, so the pin holds for
# every architecture the image is built for.
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-Dockerfile}

resolve() {
  if command -v crane >/dev/null 2>&1; then
    crane digest "$1"
  elif command -v docker >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
    docker buildx imagetools inspect "$1" | awk '$1 == "Digest:" { print $2; exit }'
  else
    echo "pin-images: needs crane, or docker with buildx" >&2
    return 1
  fi
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
pinned=0
while IFS= read -r line || [ -n "$line" ]; do
  if [[ $line =~ ^ARG[[:space:]]+([A-Z0-9_]+_IMAGE)=\"?([^@\"[:space:]]+)(@sha256:[0-9a-f]+)?\"?[[:space:]]*$ ]]; then
    name=${BASH_REMATCH[1]} ref=${BASH_REMATCH[2]}
    digest=$(resolve "$ref")
    if ! [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
      echo "pin-images: no digest for $ref (got '${digest}')" >&2
      exit 1
    fi
    echo "$name: $ref@$digest" >&2
    line="ARG $name=$ref@$digest"
    pinned=$((pinned + 1))
  fi
  printf '%s\n' "$line" >>"$tmp"
done <"$file"
if [ "$pinned" -eq 0 ]; then
  echo "pin-images: no ARG *_IMAGE= line in $file" >&2
  exit 1
fi
cat "$tmp" >"$file"
