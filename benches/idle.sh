#!/usr/bin/env bash
# Memory per idle keep-alive connection: N HTTP/1.1 connections each get
# the cached page once (benches/page_servers.sh) and stay open; RSS of the
# server's processes held minus before, per connection. Each server on a
# fresh start. Descriptors: edgepop takes at most half of its limit after
# a reserve, so a sandboxed hard limit cuts N (said when it does). RSS is
# read once all are held and again SETTLE seconds later, the figure: edgepop
# parks a connection idle for 1 s (conn/park.rs), and the allocator gives
# freed pages back to the system on its own schedule.
#   bash benches/idle.sh [connections=10000] [settle=30]
source "$(dirname "$0")/lib.sh"
N=${1:-10000}
SETTLE=${2:-30}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
RESERVE=$(( NOFILE / 4 < 1024 ? NOFILE / 4 : 1024 ))
CAP=$(( (NOFILE - RESERVE) / 2 - 500 ))
if [ "$N" -gt "$CAP" ]; then echo "nofile $NOFILE: $CAP idle connections, not $N"; N=$CAP; fi
source benches/page_servers.sh
rss() { for p in "$@"; do awk '/VmRSS/ {print $2}' /proc/"$p"/status; done | awk '{s+=$1} END {print s}'; }
declare -A R
for server in edgepop nginx; do
  if [ $server = edgepop ]; then
    start_edgepop; PORT=19080; PIDS=$EDGE_PID
  else
    kill "$EDGE_PID"; wait "$EDGE_PID" 2>/dev/null || true
    nginx -p "$W" -c "$W/cache.conf" -s stop; sleep 1; nginx -p "$W" -c "$W/cache.conf"; sleep 0.5
    PORT=19180; m=$(cat "$W/cache.pid"); PIDS="$m $(pgrep -P "$m" | tr '\n' ' ')"
  fi
  # Warm: the page cached, each worker past its first requests.
  wrk -t2 -c8 -d1s -H 'Host: shop.bench' "http://127.0.0.1:$PORT/" >/dev/null
  sleep 0.5; base=$(rss $PIDS)
  python3 benches/abuse_clients.py idle "127.0.0.1:$PORT" "$N" > "$W/held" &
  CLIENT=$!
  for _ in $(seq 1 600); do [ -s "$W/held" ] && break; sleep 0.1; done
  sleep 1; HELD=$(cat "$W/held"); first_rss=$(rss $PIDS)
  sleep "$SETTLE"; held_rss=$(rss $PIDS)
  kill "$CLIENT"; wait "$CLIENT" 2>/dev/null || true
  R[$server]=$(( (held_rss - base) * 1024 / (HELD > 0 ? HELD : 1) ))
  echo "$server: $HELD idle connections: RSS $base -> $first_rss KiB when held -> $held_rss KiB ${SETTLE} s later, ${R[$server]} bytes each"
done
awk -v e="${R[edgepop]}" -v n="${R[nginx]}" 'BEGIN { printf "ratio edgepop/nginx memory per idle connection: %.2fx\n", e / (n > 0 ? n : 1) }'
