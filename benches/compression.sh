#!/usr/bin/env bash
# Compressed responses (issue 25), edgepop beside nginx in the same run:
#  1. a 50 KB storefront page with `Accept-Encoding: br, gzip`: edgepop's
#     stored br variant (from its replica + cache) against nginx's
#     gzip_static of a file gzipped at -9; req/s, p99 and bytes on the wire;
#  2. the same HTML proxied and encoded on the fly (`Accept-Encoding:
#     gzip`): edgepop's proxied gzip (level 6) against nginx `gzip on`
#     (level 6) in front of the same origin; req/s and CPU per request;
#  3. the page's variants: bytes by coding, and the time to make them
#     (edgepop_page_compression_seconds).
#   bash benches/compression.sh [rounds=3] [seconds=8] [connections=64]
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}; SECS=${2:-8}; CONNS=${3:-64}

python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
rows = "".join(
    f'<article id="p{i}"><h2>Product {i}</h2><p class="price">{10 + i * 7 % 90}.{i * 13 % 100:02d} EUR</p>'
    f'<p>Ships in {i % 5 + 1} days. {"Organic cotton, " * (i % 3)}size {["S", "M", "L", "XL"][i % 4]}.</p></article>\n'
    for i in range(420))
body = f"<!doctype html><html><head><title>Shop</title></head><body><main>{rows}</main></body></html>"
assert 45_000 < len(body) < 60_000, len(body)
open(f"{w}/page.html", "w").write(body)
src = {"lsn": 1, "ts_ms": 0}
dom = {"after": {"hostname": "shop.bench", "store_id": 1, "status": "active", "tier": "public", "version": 1}, "source": dict(src, table="domains"), "op": "r"}
page = {"after": {"store_id": 1, "path": "/", "content_type": "text/html", "body": body, "status": 200, "cache_control": "public, max-age=60", "version": 1, "updated_at": "2026-11-21T00:00:00Z"}, "source": dict(src, table="pages"), "op": "r"}
open(f"{w}/snapshot.jsonl", "w").write(json.dumps(dom) + "\n" + json.dumps(page) + "\n")
PY
gzip -9 -k -n "$W/page.html"
echo "page: $(stat -c %s "$W/page.html") bytes, nginx's gzip -9 copy $(stat -c %s "$W/page.html.gz") bytes"

# The origin (both proxies' upstream) and nginx's two fronts.
start_nginx origin "user root; worker_processes 1; daemon on; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19101; root $W; default_type text/html; location / { try_files /page.html =404; } } }"
start_nginx front "user root; worker_processes 2; daemon on; pid $W/front.pid; error_log $W/front.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s; default_type text/html;
  upstream origin { server 127.0.0.1:19101; keepalive 64; }
  server { listen 127.0.0.1:19180; root $W;
    location / { gzip_static on; gzip_vary on; try_files /page.html =404; } }
  server { listen 127.0.0.1:19181;
    location / { gzip on; gzip_comp_level 6; gzip_types text/html; gzip_min_length 1024; gzip_proxied any;
      proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://origin; } } }"

CONF=$(edgepop_conf compression "[pools.public]
servers = [{ addr = \"127.0.0.1:19101\" }]
[[sites]]
hostname = \"origin.bench\"
store_id = 2
tier = \"public\"")
"$EDGEPOP" replica load "$W/snapshot.jsonl" --config "$CONF" >/dev/null
"$EDGEPOP" run --config "$CONF" 2>"$W/edgepop.err" &
EDGE_PID=$!
wait_http http://127.0.0.1:19190/healthz

# The first request loads the page and asks for its variants.
curl -s -o /dev/null -H 'Host: shop.bench' http://127.0.0.1:19080/
for _ in $(seq 1 100); do
  curl -s -D - -o /dev/null -H 'Host: shop.bench' -H 'Accept-Encoding: br' http://127.0.0.1:19080/ | grep -qi '^content-encoding: br' && break
  sleep 0.05
done

# wrk with the client's Accept-Encoding.
measure_ae() { # URL HOST ACCEPT_ENCODING -> "req/s p99_ms"
  wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H "Host: $2" -H "Accept-Encoding: $3" "$1" | awk '
    /Requests\/sec/ { rps=$2 }
    $1=="99%" { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v=v/1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v=v*1000 } p99=v }
    END { print rps, p99 }'
}
wire() { # URL HOST ACCEPT_ENCODING -> "bytes coding"
  echo "$(curl -s -o /dev/null -w '%{size_download}' -H "Host: $2" -H "Accept-Encoding: $3" "$1") $(curl -s -D - -o /dev/null -H "Host: $2" -H "Accept-Encoding: $3" "$1" | awk -F': ' 'tolower($1)=="content-encoding" {gsub(/\r/,"",$2); print $2}')"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
nginx_ticks() { local t=0; for p in $(pgrep -f "nginx: worker process" || true); do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }

run_case() { # NAME EDGE_URL PEER_URL HOST AE PEER_NAME
  local name=$1 e_url=$2 p_url=$3 host=$4 ae=$5 peer=$6
  echo "== $name (Accept-Encoding: $ae)"
  echo "on the wire: edgepop $(wire "$e_url" "$host" "$ae"), $peer $(wire "$p_url" "$host" "$ae") (bytes coding)"
  measure_ae "$e_url" "$host" "$ae" >/dev/null; measure_ae "$p_url" "$host" "$ae" >/dev/null
  : > "$W/e.txt"; : > "$W/p.txt"; : > "$W/ecpu.txt"; : > "$W/pcpu.txt"
  local hz; hz=$(getconf CLK_TCK)
  for r in $(seq "$ROUNDS"); do
    local t0 t1 line
    t0=$(cpu_ticks "$EDGE_PID"); line=$(measure_ae "$e_url" "$host" "$ae"); t1=$(cpu_ticks "$EDGE_PID")
    echo "$line" >> "$W/e.txt"
    awk -v t=$((t1 - t0)) -v hz="$hz" -v rps="${line%% *}" -v s="$SECS" 'BEGIN { printf "%.1f\n", t / hz * 1e6 / (rps * s) }' >> "$W/ecpu.txt"
    t0=$(nginx_ticks); line=$(measure_ae "$p_url" "$host" "$ae"); t1=$(nginx_ticks)
    echo "$line" >> "$W/p.txt"
    awk -v t=$((t1 - t0)) -v hz="$hz" -v rps="${line%% *}" -v s="$SECS" 'BEGIN { printf "%.1f\n", t / hz * 1e6 / (rps * s) }' >> "$W/pcpu.txt"
    echo "round $r: edgepop $(tail -1 "$W/e.txt") $(tail -1 "$W/ecpu.txt")us  $peer $(tail -1 "$W/p.txt") $(tail -1 "$W/pcpu.txt")us  (req/s p99_ms cpu/req)"
  done
  local er ep ec pr pp pc
  er=$(cut -d' ' -f1 "$W/e.txt" | median); ep=$(cut -d' ' -f2 "$W/e.txt" | median); ec=$(median < "$W/ecpu.txt")
  pr=$(cut -d' ' -f1 "$W/p.txt" | median); pp=$(cut -d' ' -f2 "$W/p.txt" | median); pc=$(median < "$W/pcpu.txt")
  echo "median edgepop: $er req/s, p99 $ep ms, $ec us CPU/request"
  echo "median $peer: $pr req/s, p99 $pp ms, $pc us CPU/request (its workers; the origin apart)"
  awk -v a="$er" -v b="$pr" -v c="$ep" -v d="$pp" -v n="$peer" 'BEGIN { printf "ratio edgepop/%s: req/s %.2fx, p99 %.2fx\n", n, a/b, c/d }'
}

run_case "50 KB page, stored variant" http://127.0.0.1:19080/ http://127.0.0.1:19180/ shop.bench "br, gzip" nginx-gzip_static
run_case "50 KB proxied, encoded on the fly" http://127.0.0.1:19080/ http://127.0.0.1:19181/ origin.bench "gzip" "nginx-gzip_on"

echo "== the page's variants (bytes held by coding) and the time to make them"
curl -s http://127.0.0.1:19190/metrics | grep -E '^edgepop_(cache_page_bytes|page_compression_seconds_(sum|count)|cache_weight)'
