#!/usr/bin/env bash
# Under abuse, edgepop vs nginx in the same run, same origin, same clients
# (benches/abuse_clients.py), limits set alike (head time 20 s, idle 60 s):
#   - RSS with IDLE keep-alive connections held after one request each;
#   - RSS with HEADS clients each holding a maximal unfinished head (30 KiB);
#   - req/s a legitimate wrk load (64 connections) gets during a slowloris
#     of SLOW connections, and without it.
#   bash benches/abuse.sh [idle=20000] [heads=400] [slow=1000] [seconds=10]
source "$(dirname "$0")/lib.sh"
IDLE=${1:-20000}; HEADS=${2:-400}; SLOW=${3:-1000}; SECS=${4:-10}
# Clients and servers each need a descriptor per connection. Root may raise
# the hard limit; where it cannot (a sandbox), IDLE is cut to what edgepop
# holds: half of its limit after a reserve (see `client connection limit`).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
RESERVE=$(( NOFILE / 4 < 1024 ? NOFILE / 4 : 1024 ))
CAP=$(( (NOFILE - RESERVE) / 2 - 500 ))
if [ "$IDLE" -gt "$CAP" ]; then echo "nofile $NOFILE: $CAP idle connections, not $IDLE"; IDLE=$CAP; fi
head -c 1024 /dev/zero | tr '\0' 'x' > "$W/page.html"

start_nginx origin "user root; worker_processes 1; daemon on; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19101; root $W; location / { try_files /page.html =404; } } }"

PROXY_CONF="user root; worker_processes 2; daemon on; pid $W/proxy.pid; error_log $W/proxy.err;
worker_rlimit_nofile $NOFILE;
events { worker_connections $(( NOFILE - 100 )); }
http { access_log off; keepalive_timeout 60s; client_header_timeout 20s;
  upstream public { server 127.0.0.1:19101; keepalive 128; }
  server { listen 127.0.0.1:19180;
    location / { proxy_pass http://public; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_set_header Host \$host; } } }"

CONF=$(edgepop_conf abuse '[pools.public]
servers = [{ addr = "127.0.0.1:19101" }]
health = { path = "/", interval = "5s" }
[[sites]]
hostname = "shop.bench"
store_id = 1
tier = "public"')
# Each stage on fresh servers: what an allocator keeps from one stage would
# hide the next one's cost.
fresh() {
  if [ "$1" = edgepop ]; then
    [ -n "${EDGE_PID:-}" ] && { kill "$EDGE_PID"; wait "$EDGE_PID" 2>/dev/null || true; }
    "$EDGEPOP" run --config "$CONF" 2>"$W/edgepop.err" &
    EDGE_PID=$!
    wait_http http://127.0.0.1:19190/healthz
    PORT=19080; PIDS="$EDGE_PID"
  else
    if [ -f "$W/proxy.pid" ]; then
      nginx -p "$W" -c "$W/proxy.conf" -s stop
      for _ in $(seq 1 100); do [ -f "$W/proxy.pid" ] || break; sleep 0.1; done
    fi
    [ -f "$W/proxy.conf" ] && nginx -p "$W" -c "$W/proxy.conf" || start_nginx proxy "$PROXY_CONF"
    sleep 0.5
    PORT=19180; PIDS=$(nginx_pids)
  fi
  curl -s -o /dev/null -H 'Host: shop.bench' "http://127.0.0.1:$PORT/"
}

# rss PID...: resident KiB of the processes together.
rss() { for p in "$@"; do awk '/VmRSS/ {print $2}' /proc/"$p"/status; done | awk '{s+=$1} END {print s}'; }
nginx_pids() { local m; m=$(cat "$W/proxy.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }

# hold MODE PORT N [ARG]: starts the clients, waits until they hold; sets CLIENT, HELD.
hold() {
  python3 benches/abuse_clients.py "$1" "127.0.0.1:$2" "$3" ${4:-} > "$W/held" &
  CLIENT=$!
  for _ in $(seq 1 600); do [ -s "$W/held" ] && break; sleep 0.1; done
  HELD=$(cat "$W/held")
}
release() { kill "$CLIENT"; wait "$CLIENT" 2>/dev/null || true; sleep 2; }

legit() { CONNS=64 measure "http://127.0.0.1:$1/" shop.bench | cut -d' ' -f1; }

declare -A R
for server in edgepop nginx; do
  fresh $server; base=$(rss $PIDS)
  hold idle $PORT "$IDLE"; held_rss=$(rss $PIDS); release
  R[$server.idle]=$(( (held_rss - base) * 1024 / (HELD > 0 ? HELD : 1) ))
  echo "$server: $HELD idle connections: RSS $base -> $held_rss KiB, ${R[$server.idle]} bytes each"
  fresh $server; base=$(rss $PIDS)
  hold heads $PORT "$HEADS" 30720; held_rss=$(rss $PIDS); release
  R[$server.heads]=$(( held_rss - base ))
  echo "$server: $HELD clients holding a 30 KiB head: RSS $base -> $held_rss KiB (+${R[$server.heads]} KiB)"
  fresh $server
  R[$server.calm]=$(legit $PORT)
  hold slowloris $PORT "$SLOW"; sleep 3
  R[$server.loris]=$(legit $PORT); release
  echo "$server: legitimate req/s ${R[$server.calm]} alone, ${R[$server.loris]} during a slowloris of $HELD connections"
done
awk -v ei="${R[edgepop.idle]}" -v ni="${R[nginx.idle]}" -v eh="${R[edgepop.heads]}" -v nh="${R[nginx.heads]}" \
    -v ec="${R[edgepop.calm]}" -v el="${R[edgepop.loris]}" -v nc="${R[nginx.calm]}" -v nl="${R[nginx.loris]}" 'BEGIN {
  printf "ratio edgepop/nginx: memory per idle connection %.2fx, memory under maximal heads %.2fx\n", ei / (ni > 0 ? ni : 1), eh / (nh > 0 ? nh : 1)
  printf "legitimate req/s kept during the slowloris: edgepop %.2f, nginx %.2f of its own rate alone (ratio %.2fx); absolute %.2fx\n", el / ec, nl / nc, (el / ec) / (nl / nc), el / nl }'
