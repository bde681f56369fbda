#!/usr/bin/env bash
# Pass-through: authback against nginx, side by side, in one run, on
# 127.0.0.1. A minimal upstream (examples/bench-upstream.rs) stands behind
# both; the same clients drive both, alternating targets, ROUNDS times:
#   wrk  HTTP/1.1 keep-alive, plain and TLS 1.3
#   wrk  TLS with a new connection per request (handshake cost)
#   h2load  HTTP/2 over TLS
#   wrk  a 1 KB form POST on keep-alive, plain (the body read as PHP would)
# and the upstream hit directly is the ceiling. Reports medians and the
# authback/nginx ratio, and RSS idle and under load.
#
#   bash benches/run.sh                  # ROUNDS=3, RUN_SECS=10
#   ROUNDS=1 RUN_SECS=3 bash benches/run.sh   # short mode: checking a change
#   AUTHBACK_BINS="before=/tmp/old/authback after=target/release/authback" bash benches/run.sh
#
# AUTHBACK_BINS runs several authback builds side by side in the same run
# (UPSTREAM_BIN, a built examples/bench-upstream, skips building one)
# (each name=path, with +rp to turn server.reuse_port on and +log to turn
# the access log on, into a file: name=path+log, name=path+rp+log), for
# before/after and on/off figures; by default it is this tree's release
# build, with reuse_port off and on.
#   AUTHBACK_BINS="off=target/release/authback on=target/release/authback+log" bash benches/run.sh Every authback target is reported as a ratio to
# nginx, in req/s and in CPU per request. Each authback has a callback
# route with a query_match, as a WooCommerce shop does, so every request is
# read against a route.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
RUN_SECS=${RUN_SECS:-10}
CONNS=${CONNS:-64}

source benches/common.sh
need_tools wrk:wrk nginx:nginx h2load:nghttp2-client openssl:openssl
if [ -z "${AUTHBACK_BINS:-}" ]; then
  cargo build --release -q
  AUTHBACK_BINS="authback=$PWD/target/release/authback authback-rp=$PWD/target/release/authback+rp"
fi
build_upstream
UPBIN=$UPSTREAM_BIN
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
UP=$(port); NG_TLS=$(port); NG_PLAIN=$(port)

make_cert "$WORK"

"$UPBIN" "127.0.0.1:$UP" & UP_PID=$!; PIDS+=($UP_PID)

declare -A AB_BIN AB_TLS AB_PLAIN AB_ADM AB_PID
NAMES=()
for spec in $AUTHBACK_BINS; do
  name=${spec%%=*}; NAMES+=("$name"); bin=${spec#*=}
  reuse=false; log=false
  while :; do
    case $bin in
      *+rp) reuse=true; bin=${bin%+rp} ;;
      *+log) log=true; bin=${bin%+log} ;;
      *) break ;;
    esac
  done
  AB_BIN[$name]=$bin
  AB_TLS[$name]=$(port); AB_PLAIN[$name]=$(port); AB_ADM[$name]=$(port)
  cat > "$WORK/$name.toml" <<TOML
[server]
reuse_port = $reuse
listen = "127.0.0.1:${AB_TLS[$name]}"
listen_plain = "127.0.0.1:${AB_PLAIN[$name]}"
public_url = "https://localhost:${AB_TLS[$name]}"
[server.tls]
cert = "$WORK/tls.crt"
key = "$WORK/tls.key"
[admin]
listen = "127.0.0.1:${AB_ADM[$name]}"
[upstream]
url = "http://127.0.0.1:$UP"
[limits]
max_connections = 100000
TOML
  if $log; then
    printf '[access_log]\nenabled = true\npath = "%s"\n' "$WORK/$name.access.log" >> "$WORK/$name.toml"
  fi
  shop_route >> "$WORK/$name.toml"
  RUST_LOG=warn "${AB_BIN[$name]}" --config "$WORK/$name.toml" 2>"$WORK/$name.log" & AB_PID[$name]=$!; PIDS+=($!)
done

nginx_conf "$WORK" "$UP" "$NG_PLAIN" "$NG_TLS"
nginx -c "$WORK/nginx.conf" -p "$WORK" -g "daemon off;" & NG_PID=$!; PIDS+=($NG_PID)
for name in "${NAMES[@]}"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:${AB_ADM[$name]}/readyz" >/dev/null && break; sleep 0.05; done
done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NG_PLAIN/" >/dev/null && break; sleep 0.05; done

rss() { # pid... -> total RSS in MB
  local kb=0
  for p in "$@"; do for q in $p $(pgrep -P "$p" || true); do kb=$((kb + $(awk '/VmRSS/ {print $2}' /proc/"$q"/status 2>/dev/null || echo 0))); done; done
  echo $((kb / 1024))
}
declare -A IDLE LOAD
for name in "${NAMES[@]}"; do IDLE[$name]=$(rss "${AB_PID[$name]}"); done
IDLE_NG=$(rss $NG_PID)

wrk_run() { # url [extra args] -> "req/s p50 p99"
  local url=$1; shift
  wrk -t2 -c"$CONNS" -d"${RUN_SECS}s" --latency "$@" "$url" 2>&1 |
    awk '/requests in/ {n=$1} /Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx|Socket errors/ {e=e" "$0} END {printf "%s %s %s %s\n", r, p50, p99, n; if (e) print "errors:" e > "/dev/stderr"}'
}
h2_run() { # url -> "req/s - - requests"
  h2load -t2 -c"$CONNS" -m10 -D"$RUN_SECS" "$1" 2>&1 | awk '/finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) {r=$(i-1)}} /^requests:/ {n=$2} END {printf "%s - - %s\n", r, n}'
}
cpu_ticks() { # pid... -> user+system clock ticks of them and their children
  local t=0
  for p in "$@"; do for q in $p $(pgrep -P "$p" || true); do t=$((t + $(awk '{print $14 + $15}' /proc/"$q"/stat 2>/dev/null || echo 0))); done; done
  echo "$t"
}

declare -A RES
declare -A CPU
scenario() { # name target url kind
  local out pid c0 c1 rate p50 p99 n us
  case $2 in nginx) pid=$NG_PID ;; upstream) pid=$UP_PID ;; *) pid=${AB_PID[$2]} ;; esac
  c0=$(cpu_ticks "$pid")
  case $4 in
    wrk) out=$(wrk_run "$3") ;;
    close) out=$(wrk_run "$3" -H "Connection: close") ;;
    form) out=$(wrk_run "$3" -s "$WORK/form.lua") ;;
    h2) out=$(h2_run "$3") ;;
  esac
  c1=$(cpu_ticks "$pid")
  read -r rate p50 p99 n <<<"$out"
  # The server's CPU per request: the steadiest figure when the client, the
  # proxy and the upstream share the cores.
  us=$(python3 -c "print(f'{($c1 - $c0) * 1e6 / $(getconf CLK_TCK) / max(${n:-0}, 1):.1f}')")
  RES["$1|$2"]="${RES["$1|$2"]:-} $rate"
  CPU["$1|$2"]="${CPU["$1|$2"]:-} $us"
  printf '%-16s %-9s %12s %9s %9s %10s\n' "$1" "$2" "$rate" "$p50" "$p99" "$us"
}

# A 1 KB form, as a checkout page posts it.
python3 - "$WORK/form.lua" <<'PY'
import sys
body = "&".join(f"field{i}=value-{i:04d}" for i in range(60))[:1024]
open(sys.argv[1], "w").write(
    'wrk.method = "POST"\n'
    'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
    f'wrk.body = "{body}"\n')
PY

LOAD_NG=0
echo "machine: $(nproc) cores; $(nginx -v 2>&1); wrk -t2 -c$CONNS, h2load -t2 -c$CONNS -m10; ${RUN_SECS}s runs, $ROUNDS rounds"
printf '%-16s %-9s %12s %9s %9s %10s\n' scenario target req/s p50 p99 "CPU us/req"
for r in $(seq "$ROUNDS"); do
  scenario direct upstream "http://127.0.0.1:$UP/" wrk
  for t in "${NAMES[@]}" nginx; do
    if [ "$t" = nginx ]; then P=$NG_PLAIN; S=$NG_TLS; else P=${AB_PLAIN[$t]}; S=${AB_TLS[$t]}; fi
    scenario plain "$t" "http://127.0.0.1:$P/" wrk
    scenario tls "$t" "https://127.0.0.1:$S/" wrk
    if [ "$t" = nginx ]; then LOAD_NG=$(rss $NG_PID); else LOAD[$t]=$(rss "${AB_PID[$t]}"); fi
    scenario tls-newconn "$t" "https://127.0.0.1:$S/" close
    scenario h2 "$t" "https://127.0.0.1:$S/" h2
    scenario form "$t" "http://127.0.0.1:$P/checkout/?utm_source=x&page=2" form
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
echo
echo "medians, and each authback build against nginx (req/s ratio: higher is better; CPU ratio: lower is better):"
for s in plain tls tls-newconn h2 form; do
  n=$(echo "${RES["$s|nginx"]}" | median); cn=$(echo "${CPU["$s|nginx"]}" | median)
  printf '  %-12s %-9s %10s req/s  %7s us/req\n' "$s" nginx "$n" "$cn"
  for t in "${NAMES[@]}"; do
    a=$(echo "${RES["$s|$t"]}" | median); ca=$(echo "${CPU["$s|$t"]}" | median)
    printf '  %-12s %-9s %10s req/s  %7s us/req   req/s %s   CPU %s\n' "$s" "$t" "$a" "$ca" "$(ratio "$a" "$n")" "$(ratio "$ca" "$cn")"
  done
done
printf '  %-12s %10s\n' "upstream direct" "$(echo "${RES["direct|upstream"]}" | median)"
for t in "${NAMES[@]}"; do echo "RSS MB $t: idle ${IDLE[$t]}, under load ${LOAD[$t]:-0}"; done
for t in "${NAMES[@]}"; do
  if [ -f "$WORK/$t.access.log" ]; then
    dropped=$(curl -s "http://127.0.0.1:${AB_ADM[$t]}/metrics" | awk '/^authback_access_log_dropped_total / {print $2}')
    echo "access log $t: $(wc -l < "$WORK/$t.access.log") lines ($(( $(wc -c < "$WORK/$t.access.log") / 1000000 )) MB), ${dropped:-?} dropped"
  fi
done
echo "RSS MB nginx (master + 2 workers): idle $IDLE_NG, under load $LOAD_NG"
