#!/usr/bin/env bash
# Memory: RSS of edgepop holding N cached 8 KiB pages, against the payload.
#   bash benches/memory.sh [N...]   (default: 10000 100000)
source "$(dirname "$0")/lib.sh"
command -v curl >/dev/null
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
for N in ${@:-10000 100000}; do
  python3 - "$W" "$N" <<'PY'
import json, sys
w, n = sys.argv[1], int(sys.argv[2])
filler = "<p>lorem ipsum dolor sit amet, consectetur adipiscing elit</p>" * 140
with open(f"{w}/snap.jsonl", "w") as f:
    f.write(json.dumps({"after": {"hostname": "shop.bench", "store_id": 1, "status": "active", "tier": "public", "version": 1}, "source": {"table": "domains"}, "op": "r"}) + "\n")
    for i in range(n):
        body = (f"<!doctype html><title>p{i}</title>" + filler)[:8192]
        f.write(json.dumps({"after": {"store_id": 1, "path": f"/p/{i}", "content_type": "text/html", "body": body, "status": 200, "cache_control": None, "version": 1, "updated_at": "2026-11-21T00:00:00Z"}, "source": {"table": "pages"}, "op": "r"}) + "\n")
with open(f"{w}/urls.txt", "w") as f:
    for i in range(n):
        f.write(f'url = "http://127.0.0.1:19080/p/{i}"\noutput = "/dev/null"\n')
PY
  rm -f "$W/replica.redb"
  CONF=$(edgepop_conf mem '[cache]
max_bytes = 4294967296
[pools.public]
servers = [{ addr = "127.0.0.1:9" }]
health = { enabled = false }')
  "$EDGEPOP" replica load "$W/snap.jsonl" --config "$CONF" >/dev/null
  "$EDGEPOP" run --config "$CONF" 2>"$W/edgepop.err" &
  PID=$!
  wait_http http://127.0.0.1:19190/healthz
  curl -s -o /dev/null -H 'Host: shop.bench' http://127.0.0.1:19080/p/0
  BASE=$(rss_kib $PID)
  curl -s --parallel --parallel-max 32 -H 'Host: shop.bench' --config "$W/urls.txt"
  ENTRIES=$(curl -s http://127.0.0.1:19190/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["cache"]["pages"])')
  AFTER=$(rss_kib $PID)
  awk -v n="$N" -v e="$ENTRIES" -v b="$BASE" -v a="$AFTER" 'BEGIN {
    per = (a - b) * 1024 / n
    printf "%d pages (%d cached): RSS %.1f MiB (base %.1f MiB), %.0f bytes per 8192-byte page = %.2fx payload\n", n, e, a/1024, b/1024, per, per/8192 }'
  kill $PID; wait $PID 2>/dev/null || true
done
