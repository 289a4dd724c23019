#!/usr/bin/env bash
# Proxied GET through a 3-server least-connections pool: edgepop against
# nginx (least_conn, upstream keep-alive), HAProxy (balance leastconn,
# http-reuse always) and Caddy (lb_policy least_conn), the same origins,
# the same wrk load, alternating rounds, medians, ratios.
#   bash benches/proxy.sh [rounds=3] [seconds=10] [connections=64]
# PEERS="nginx haproxy caddy" (default) picks the peers measured.
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}
PEERS=${PEERS:-nginx haproxy caddy}
source benches/proxy_servers.sh
bash conf/build-deps.sh haproxy caddy
start_edgepop

declare -A URL=([edgepop]=http://127.0.0.1:19080/ [nginx]=http://127.0.0.1:19180/
  [haproxy]=http://127.0.0.1:19280/ [caddy]=http://127.0.0.1:19380/)
POOL="127.0.0.1:19101 127.0.0.1:19102 127.0.0.1:19103"
if [[ " $PEERS " == *" haproxy "* ]]; then
  cat > "$W/haproxy.cfg" <<CFG
global
  nbthread 2
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend edge
  bind 127.0.0.1:19280
  option forwardfor
  http-response set-header x-edge-route bench1
  default_backend pool
backend pool
  balance leastconn
  http-reuse always
$(i=0; for s in $POOL; do i=$((i+1)); echo "  server o$i $s"; done)
CFG
  haproxy -D -f "$W/haproxy.cfg" -p "$W/haproxy.pid"
  trap 'kill $(cat "$W/haproxy.pid") 2>/dev/null; cleanup' EXIT
fi
if [[ " $PEERS " == *" caddy "* ]]; then
  cat > "$W/Caddyfile" <<CFG
{
  admin off
  auto_https off
  servers {
    protocols h1
  }
}
http://:19380 {
  bind 127.0.0.1
  header x-edge-route bench1
  reverse_proxy $POOL {
    lb_policy least_conn
  }
}
CFG
  GOMAXPROCS=2 caddy run --config "$W/Caddyfile" --adapter caddyfile >"$W/caddy.out" 2>&1 &
fi
for name in edgepop $PEERS; do
  wait_http "${URL[$name]}" 2>/dev/null || true
  echo "$name ${URL[$name]}: $(curl -s -o /dev/null -w '%{http_code} %{size_download} bytes' -H 'Host: shop.bench' "${URL[$name]}")"
done

for name in edgepop $PEERS; do measure "${URL[$name]}" shop.bench >/dev/null; : > "$W/$name.txt"; done
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for name in edgepop $PEERS; do
    measure "${URL[$name]}" shop.bench >> "$W/$name.txt"
    line="$line  $name $(tail -1 "$W/$name.txt")"
  done
  echo "$line  (req/s p99_ms)"
done
ER=$(cut -d' ' -f1 "$W/edgepop.txt" | median); EP=$(cut -d' ' -f2 "$W/edgepop.txt" | median)
echo "median edgepop: $ER req/s, p99 $EP ms"
for name in $PEERS; do
  PR=$(cut -d' ' -f1 "$W/$name.txt" | median); PP=$(cut -d' ' -f2 "$W/$name.txt" | median)
  echo "median $name: $PR req/s, p99 $PP ms"
  awk -v a="$ER" -v b="$PR" -v c="$EP" -v d="$PP" -v n="$name" 'BEGIN { printf "ratio edgepop/%s: req/s %.2fx, p99 %.2fx\n", n, a/b, c/d }'
done
