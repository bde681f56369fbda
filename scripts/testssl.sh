#!/usr/bin/env bash
# TLS posture: runs testssl.sh (Debian package `testssl.sh`) against authback
# on 127.0.0.1 with an ECDSA P-256 and an RSA 2048 certificate, and prints
# protocols, cipher suites, server preferences and the vulnerability checks.
#
#   bash scripts/testssl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v testssl >/dev/null || { apt-get update -qq && apt-get install -y -qq testssl.sh >/dev/null; }
cargo build --release -q
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_one() { # $1: label, $2: openssl key options
    local pub adm
    pub=$(port); adm=$(port)
    # shellcheck disable=SC2086
    openssl req -x509 -newkey $2 -nodes -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost -keyout "$WORK/$1.key" -out "$WORK/$1.pem" 2>/dev/null
    cat > "$WORK/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$pub"
public_url = "https://localhost:$pub"
[server.tls]
cert = "$WORK/$1.pem"
key = "$WORK/$1.key"
[admin]
listen = "127.0.0.1:$adm"
[upstream]
url = "http://127.0.0.1:9"
TOML
    target/release/authback run --config "$WORK/$1.toml" 2>"$WORK/$1.log" &
    PID=$!
    for _ in $(seq 100); do curl -skf "http://127.0.0.1:$adm/readyz" >/dev/null && break; sleep 0.1; done
    echo "=== $1 certificate"
    testssl --quiet --color 0 --warnings off -p -s -P -E -U --ip 127.0.0.1 "localhost:$pub" \
        | grep -vE '^\s*$|^ Start|^ Done|^Testing|rDNS|Service detected|^ Further' || true
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}
run_one ecdsa "ec -pkeyopt ec_paramgen_curve:prime256v1"
run_one rsa "rsa:2048"
