#!/usr/bin/env bash
# User-space instructions per request, edgepop against nginx, counted by
# callgrind (the same on every machine, where req/s ratios are not): each
# server with one worker under `valgrind --tool=callgrind`, warmed up,
# counters zeroed, then `wrk -t1 -c8` for SECS, counters dumped; the
# program's total instructions ÷ the requests wrk counted.
#   bash benches/instructions.sh [page|proxy] [seconds=10]
# page: the cached 8 KiB page (edgepop's cache; nginx proxy_cache).
# proxy: a 1 KiB GET through a 3-server least-connections pool.
# FAST_PATH=false counts edgepop with proxy.fast_path off (default: on).
# ACCEPT_ENCODING=... sends that header (page: edgepop serves its stored
# variant; the peer is then nginx gzip_static on a gzip -9 copy of the
# page, as benches/compression.sh).
source "$(dirname "$0")/lib.sh"
bash conf/build-deps.sh valgrind
WHAT=${1:-page}; SECS=${2:-10}

bench_site

# The origins: one for the page (nginx fills its cache from it), three for
# the pool, each answering its file.
start_nginx origin "user root; worker_processes 1; daemon on; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19101; listen 127.0.0.1:19102; listen 127.0.0.1:19103; root $W;
    location / { try_files /$( [ "$WHAT" = page ] && echo page || echo small ).html =404; } } }"

AE=(); [ -n "${ACCEPT_ENCODING:-}" ] && AE=(-H "Accept-Encoding: $ACCEPT_ENCODING")
if [ "$WHAT" = page ] && [ ${#AE[@]} -gt 0 ]; then
  gzip -9 -k -n "$W/page.html"
  PEER_HTTP="server { listen 127.0.0.1:19180; root $W; default_type text/html;
    location / { gzip_static on; gzip_vary on; try_files /page.html =404; } }"
  POOL='[pools.public]
servers = [{ addr = "127.0.0.1:19101" }]'
elif [ "$WHAT" = page ]; then
  PEER_HTTP="proxy_cache_path $W/nginx-cache keys_zone=pages:10m;
  server { listen 127.0.0.1:19180; location / { proxy_cache pages; proxy_cache_valid 200 1h;
    proxy_pass http://127.0.0.1:19101; add_header x-edge-cache \$upstream_cache_status; } }"
  POOL='[pools.public]
servers = [{ addr = "127.0.0.1:19101" }]'
else
  PEER_HTTP="upstream pool { least_conn; server 127.0.0.1:19101; server 127.0.0.1:19102; server 127.0.0.1:19103; keepalive 64; }
  server { listen 127.0.0.1:19180; location / { proxy_pass http://pool; proxy_http_version 1.1;
    proxy_set_header Connection \"\"; proxy_set_header X-Forwarded-For \$remote_addr; add_header x-edge-route bench1; } }"
  POOL='[pools.public]
servers = [{ addr = "127.0.0.1:19101" }, { addr = "127.0.0.1:19102" }, { addr = "127.0.0.1:19103" }]
health = { path = "/", interval = "5s" }
[[sites]]
hostname = "shop.bench"
store_id = 1
tier = "public"'
fi
mkdir -p "$W/nginx-cache"
printf '%s\n' "user root; worker_processes 1; master_process off; daemon off; pid $W/peer.pid; error_log $W/peer.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s; $PEER_HTTP }" > "$W/peer.conf"

CONF=$(edgepop_conf count "$POOL")
sed -i 's/^threads = 2/threads = 1/' "$CONF"
# (Only when asked: a binary from before proxy.fast_path would refuse the key.)
[ -n "${FAST_PATH:-}" ] && sed -i "s/^keepalive_requests = 1000000/keepalive_requests = 1000000\nfast_path = $FAST_PATH/" "$CONF"
[ "$WHAT" = page ] && "$EDGEPOP" replica load "$W/snapshot.jsonl" --config "$CONF" >/dev/null

# count NAME URL CMD...: runs CMD under callgrind; prints instructions per request.
count() {
  local name=$1 url=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$W/$name.cg" "$@" >/dev/null 2>"$W/$name.vg" &
  local pid=$!
  for _ in $(seq 1 600); do curl -s -o /dev/null -H 'Host: shop.bench' "$url" && break; sleep 0.1; done
  wrk -t1 -c8 -d3s -H 'Host: shop.bench' "${AE[@]}" "$url" >/dev/null   # warm-up (and the page's variants made)
  echo "$name answers: $(curl -s -o /dev/null -w '%{size_download} bytes' -H 'Host: shop.bench' "${AE[@]}" "$url")" >&2
  callgrind_control -z "$pid" >/dev/null 2>&1
  local requests
  requests=$(wrk -t1 -c8 -d"${SECS}s" -H 'Host: shop.bench' "${AE[@]}" "$url" | awk '/requests in/ { print $1 }')
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  local dump
  dump=$(ls -t "$W/$name.cg".* | head -1)
  local ir
  ir=$(awk '/^(summary|totals):/ { print $2 }' "$dump" | tail -1)
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  echo "$name: $requests requests, $(awk -v i="$ir" -v r="$requests" 'BEGIN { printf "%.1fk", i / r / 1000 }') instructions per request"
}

count edgepop http://127.0.0.1:19080/ "$EDGEPOP" run --config "$CONF"
count nginx http://127.0.0.1:19180/ nginx -p "$W" -c "$W/peer.conf"
