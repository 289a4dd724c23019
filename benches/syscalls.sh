#!/usr/bin/env bash
# What each server does per request, edgepop beside nginx on the same path
# and load (wrk, 64 connections): CPU time and context switches (perf stat
# over the server's processes), then system calls (strace -c -f), each
# divided by the requests wrk completed meanwhile. strace slows the traced
# server; the counts per request are what to read.
#   bash benches/syscalls.sh page|proxy [seconds=4]
source "$(dirname "$0")/lib.sh"
bash conf/build-deps.sh strace linux-perf
WHAT=${1:-page}; SECS=${2:-4}
source "benches/${WHAT}_servers.sh"
start_edgepop
curl -s -o /dev/null -H 'Host: shop.bench' http://127.0.0.1:19080/
curl -s -o /dev/null -H 'Host: shop.bench' http://127.0.0.1:19180/
nginx_conf=$([ "$WHAT" = page ] && echo cache || echo proxy)
for server in edgepop nginx; do
  if [ $server = edgepop ]; then PORT=19080; PIDS=$EDGE_PID; else
    PORT=19180; m=$(cat "$W/$nginx_conf.pid"); PIDS="$(pgrep -P "$m" | tr '\n' ' ')"; fi
  args=(); for p in $PIDS; do args+=(-p "$p"); done
  pids=$(echo $PIDS | tr ' ' ',')
  perf stat -x, -e task-clock,context-switches -p "$pids" -o "$W/perf.$server" -- sleep "$SECS" &
  PS=$!
  reqs=$(wrk -t2 -c64 -d"${SECS}s" -H 'Host: shop.bench' "http://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
  wait $PS || true
  awk -F, -v n="$reqs" -v s="$server" '$3=="task-clock" { cpu=$1 } $3=="context-switches" { cs=$1 }
    END { printf "== %s: %d requests, %.1f us CPU and %.2f context switches per request\n", s, n, cpu*1000/n, cs/n }' "$W/perf.$server"
  strace -c -f "${args[@]}" -o "$W/strace.$server" &
  ST=$!; sleep 0.5
  reqs=$(wrk -t2 -c64 -d"${SECS}s" -H 'Host: shop.bench' "http://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
  kill -INT $ST; wait $ST 2>/dev/null || true
  echo "== $server: $reqs requests"
  awk -v n="$reqs" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { c=$4; printf "  %-16s %8.3f per request\n", $NF, c/n }' "$W/strace.$server" | sort -k2 -nr | head -12
done
