# Shared by the benchmark scripts: tools, a scratch dir, wrk measurement,
# medians and ratios. Source it; it sets W (scratch dir) and a cleanup trap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash conf/build-deps.sh nginx-light wrk curl
# PROFILE=production measures the link-time-optimised build operators
# ship (Cargo.toml); the default is the release build the tests use.
# EDGEPOP_BIN=path measures that binary as it is (no build).
PROFILE=${PROFILE:-release}
if [ -n "${EDGEPOP_BIN:-}" ]; then
  EDGEPOP=$EDGEPOP_BIN
else
  cargo build --profile "$PROFILE" --locked -q
  EDGEPOP=./target/$PROFILE/edgepop
fi
W=$(mktemp -d)
NGINX_CONFS=()
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  for c in "${NGINX_CONFS[@]}"; do nginx -p "$W" -c "$c" -s stop 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "kept $W" || rm -rf "$W"
}
trap cleanup EXIT

# start_nginx NAME CONFIG_TEXT: writes $W/NAME.conf and starts it.
start_nginx() {
  printf '%s\n' "$2" > "$W/$1.conf"
  nginx -p "$W" -c "$W/$1.conf"
  NGINX_CONFS+=("$W/$1.conf")
}

# measure URL HOST -> "req/s p99_ms" from wrk with --latency.
measure() {
  wrk -t2 -c"${CONNS:-64}" -d"${SECS:-10}s" --latency -H "Host: $2" "$1" | awk '
    /Requests\/sec/ { rps=$2 }
    $1=="99%" { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v=v/1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v=v*1000 } p99=v }
    END { print rps, p99 }'
}

median() { sort -g | awk '{a[NR]=$1} END { print a[int((NR+1)/2)] }'; }

# compare ROUNDS EDGE_URL PEER_URL HOST PEER_NAME: alternating rounds, medians, ratios.
compare() {
  local rounds=$1 e_url=$2 p_url=$3 host=$4 peer=$5
  measure "$e_url" "$host" >/dev/null; measure "$p_url" "$host" >/dev/null   # warm-up
  : > "$W/e.txt"; : > "$W/p.txt"
  for r in $(seq "$rounds"); do
    measure "$e_url" "$host" >> "$W/e.txt"
    measure "$p_url" "$host" >> "$W/p.txt"
    echo "round $r: edgepop $(tail -1 "$W/e.txt")  $peer $(tail -1 "$W/p.txt")  (req/s p99_ms)"
  done
  local er ep pr pp
  er=$(cut -d' ' -f1 "$W/e.txt" | median); ep=$(cut -d' ' -f2 "$W/e.txt" | median)
  pr=$(cut -d' ' -f1 "$W/p.txt" | median); pp=$(cut -d' ' -f2 "$W/p.txt" | median)
  echo "median edgepop: $er req/s, p99 $ep ms"
  echo "median $peer: $pr req/s, p99 $pp ms"
  awk -v a="$er" -v b="$pr" -v c="$ep" -v d="$pp" -v n="$peer" 'BEGIN { printf "ratio edgepop/%s: req/s %.2fx, p99 %.2fx\n", n, a/b, c/d }'
}

# edgepop_conf NAME BODY: a config with scratch paths; prints its path.
edgepop_conf() {
  cat > "$W/$1.toml" <<CONF
[pop]
id = "bench1"
[listen]
http = ["127.0.0.1:19080"]
[admin]
listen = "127.0.0.1:19190"
[server]
threads = 2
upgrade_sock = "$W/up.sock"
pid_file = "$W/edgepop.pid"
[log]
access = "off"
level = "warn"
[proxy]
# As the nginx peers' keepalive_requests: no reconnects in a measurement.
keepalive_requests = 1000000
[replica]
path = "$W/replica.redb"
$2
CONF
  echo "$W/$1.toml"
}

# bench_cert: a self-made ECDSA P-256 certificate for shop.bench in
# $W/cert.pem + $W/key.pem, and TLS_SECTION: edgepop's HTTPS listener on
# 19543 with it as a static certificate (nginx gets the same files).
bench_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=shop.bench -addext subjectAltName=DNS:shop.bench \
    -addext basicConstraints=critical,CA:FALSE -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
  TLS_SECTION="[tls]
listen = [\"127.0.0.1:19543\"]
dir = \"$W/tls\"
[[tls.certificates]]
hostnames = [\"shop.bench\"]
cert = \"$W/cert.pem\"
key = \"$W/key.pem\""
}

wait_http() { for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

# bench_site: the storefront every page bench serves, in $W: page.html
# (the 8 KiB page), small.html (a 1 KiB origin answer) and snapshot.jsonl
# (shop.bench and its page "/", for `edgepop replica load`).
bench_site() {
  head -c 1024 /dev/zero | tr '\0' 'x' > "$W/small.html"
  python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
body = ("<!doctype html><title>Product</title>" + "<p>lorem ipsum dolor sit amet</p>" * 300)[:8192]
open(f"{w}/page.html", "w").write(body)
src = {"lsn": 1, "ts_ms": 0}
dom = {"after": {"hostname": "shop.bench", "store_id": 1, "status": "active", "tier": "public", "version": 1}, "source": dict(src, table="domains"), "op": "r"}
page = {"after": {"store_id": 1, "path": "/", "content_type": "text/html", "body": body, "status": 200, "cache_control": "public, max-age=60", "version": 1, "updated_at": "2026-11-21T00:00:00Z"}, "source": dict(src, table="pages"), "op": "r"}
open(f"{w}/snapshot.jsonl", "w").write(json.dumps(dom) + "\n" + json.dumps(page) + "\n")
PY
}
