#!/usr/bin/env bash
# Two edgepop binaries side by side in one run (a refactor's "no regression"):
# the proxied 1 KiB GET through the 3-server pool, or the cached 8 KiB page,
# alternating rounds, medians, ratio NEW/OLD.
#   bash benches/ab.sh OLD_BIN NEW_BIN [proxy|page] [rounds=3] [seconds=10] [connections=64]
# Build OLD from another commit: git worktree add /tmp/old REV &&
#   (cd /tmp/old && cargo build --release --locked) && cp /tmp/old/target/release/edgepop /tmp/edgepop-old
source "$(dirname "$0")/lib.sh"
OLD=$1; NEW=$2; WHAT=${3:-proxy}; ROUNDS=${4:-3}; SECS=${5:-10}; CONNS=${6:-64}

bench_site

start_nginx origin "user root; worker_processes 1; daemon on; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19101; listen 127.0.0.1:19102; listen 127.0.0.1:19103; root $W; location / { try_files /small.html =404; } } }"

POOL='[pools.public]
servers = [{ addr = "127.0.0.1:19101" }, { addr = "127.0.0.1:19102" }, { addr = "127.0.0.1:19103" }]
health = { path = "/", interval = "5s" }'
# proxy: the site from the config, no page in the replica; page: both from the replica.
[ "$WHAT" = proxy ] && POOL="$POOL
[[sites]]
hostname = \"shop.bench\"
store_id = 1
tier = \"public\""

# run_edge NAME BIN HTTP_PORT ADMIN_PORT
run_edge() {
  local conf
  conf=$(edgepop_conf "$1" "$POOL")
  sed -i "s/19080/$3/; s/19190/$4/; s#$W/replica.redb#$W/$1.redb#; s#$W/up.sock#$W/$1.sock#; s#$W/edgepop.pid#$W/$1.pid#" "$conf"
  [ "$WHAT" = page ] && "$2" replica load "$W/snapshot.jsonl" --config "$conf" >/dev/null
  "$2" run --config "$conf" 2>"$W/$1.err" &
  wait_http "http://127.0.0.1:$4/healthz"
}
run_edge old "$OLD" 19080 19190
run_edge new "$NEW" 19081 19191
for url in http://127.0.0.1:19080/ http://127.0.0.1:19081/; do
  echo "$url: $(curl -s -o /dev/null -w '%{http_code} %{size_download} bytes' -H 'Host: shop.bench' $url) $(curl -s -D - -o /dev/null -H 'Host: shop.bench' $url | grep -i '^x-edge-cache' | tr -d '\r')"
done
# compare() calls the first "edgepop" and the second the peer.
compare "$ROUNDS" http://127.0.0.1:19081/ http://127.0.0.1:19080/ shop.bench old
