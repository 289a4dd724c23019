#!/usr/bin/env bash
# A cached storefront page over HTTP/1.1 keep-alive: edgepop serving it from
# its replica + cache vs nginx serving the same bytes from proxy_cache.
#   bash benches/page.sh [rounds=3] [seconds=10] [connections=64]
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}

# One 8 KiB storefront page, the same bytes for both.
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
body = ("<!doctype html><title>Product</title>" + "<p>lorem ipsum dolor sit amet</p>" * 300)[:8192]
open(f"{w}/page.html", "w").write(body)
src = {"table": None, "lsn": 1, "ts_ms": 0}
dom = {"after": {"hostname": "shop.bench", "store_id": 1, "status": "active", "tier": "public", "version": 1}, "source": dict(src, table="domains"), "op": "r"}
page = {"after": {"store_id": 1, "path": "/", "content_type": "text/html", "body": body, "status": 200, "cache_control": "public, max-age=60", "version": 1, "updated_at": "2026-11-21T00:00:00Z"}, "source": dict(src, table="pages"), "op": "r"}
open(f"{w}/snapshot.jsonl", "w").write(json.dumps(dom) + "\n" + json.dumps(page) + "\n")
PY

start_nginx origin "user root; worker_processes 1; daemon on; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:19101; root $W; default_type text/html; location / { try_files /page.html =404; } } }"

mkdir -p "$W/nginx-cache"
start_nginx cache "user root; worker_processes 2; daemon on; pid $W/cache.pid; error_log $W/cache.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  proxy_cache_path $W/nginx-cache keys_zone=pages:10m;
  server { listen 127.0.0.1:19180;
    location / { proxy_cache pages; proxy_cache_valid 200 1h; proxy_pass http://127.0.0.1:19101;
      add_header x-edge-cache \$upstream_cache_status; add_header x-edge-route bench1; } } }"

CONF=$(edgepop_conf page '[pools.public]
servers = [{ addr = "127.0.0.1:19101" }]')
./target/release/edgepop replica load "$W/snapshot.jsonl" --config "$CONF" >/dev/null
./target/release/edgepop run --config "$CONF" 2>"$W/edgepop.err" &
wait_http http://127.0.0.1:19190/healthz
curl -s -o /dev/null -H 'Host: shop.bench' http://127.0.0.1:19180/   # fill nginx's cache
for url in http://127.0.0.1:19080/ http://127.0.0.1:19180/; do
  echo "$url: $(curl -s -o /dev/null -w '%{http_code} %{size_download} bytes' -H 'Host: shop.bench' $url) $(curl -s -D - -o /dev/null -H 'Host: shop.bench' $url | grep -i '^x-edge-cache' | tr -d '\r')"
done
compare "$ROUNDS" http://127.0.0.1:19080/ http://127.0.0.1:19180/ shop.bench nginx-proxy_cache
