#!/usr/bin/env bash
# edgepop ttfb beside oha and wrk on the same target (edgepop's cached 1 KiB
# page, HTTP/1.1 keep-alive) in the same run, alternating rounds:
#  - closed model, CONNS connections: the rate each tool drives and the
#    p50/p99 it reports (the tool's own overhead must not be the limit);
#  - open model at half the lowest of those rates, with coordinated-omission
#    correction (oha --latency-correction): p50/p99 should agree.
#   bash benches/ttfb.sh [rounds=3] [seconds=10] [connections=64]
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}
command -v oha >/dev/null || cargo install --locked oha

python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
body = ("<!doctype html><title>Product</title>" + "<p>lorem ipsum dolor sit amet</p>" * 40)[:1024]
src = {"table": None, "lsn": 1, "ts_ms": 0}
dom = {"after": {"hostname": "shop.bench", "store_id": 1, "status": "active", "tier": "public", "version": 1}, "source": dict(src, table="domains"), "op": "r"}
page = {"after": {"store_id": 1, "path": "/", "content_type": "text/html", "body": body, "status": 200, "cache_control": "public, max-age=60", "version": 1, "updated_at": "2026-11-21T00:00:00Z"}, "source": dict(src, table="pages"), "op": "r"}
open(f"{w}/snapshot.jsonl", "w").write(json.dumps(dom) + "\n" + json.dumps(page) + "\n")
PY
CONF=$(edgepop_conf ttfb '[pools.public]
servers = [{ addr = "127.0.0.1:9" }]
health = { enabled = false }')
"$EDGEPOP" replica load "$W/snapshot.jsonl" --config "$CONF" >/dev/null
"$EDGEPOP" run --config "$CONF" 2>"$W/edgepop.err" &
wait_http http://127.0.0.1:19190/healthz
URL=http://127.0.0.1:19080/
curl -s -o /dev/null -H 'Host: shop.bench' $URL

# Each prints "req/s p50_ms p99_ms"; $1: extra arguments (a rate).
run_oha() {
  oha -z "${SECS}s" -c "$CONNS" --no-tui --output-format json -H 'Host: shop.bench' ${1:-} "$URL" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); s=r["summary"]; p=r["latencyPercentiles"]
print(round(s["requestsPerSec"],1), round(p["p50"]*1000,3), round(p["p99"]*1000,3))'
}
run_ttfb() {
  "$EDGEPOP" ttfb "$URL" -H 'Host: shop.bench' -d "${SECS}s" -c "$CONNS" -q --json - ${1:-} |
    python3 -c 'import json,sys; t=json.load(sys.stdin)["targets"][0]; l=t["latency"]
print(t["rate_rps"], l["p50_ms"], l["p99_ms"])'
}
run_wrk() {
  wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H 'Host: shop.bench' "$URL" | awk '
    function ms(v) { if (v ~ /us$/) { sub(/us/,"",v); return v/1000 } if (v ~ /ms$/) { sub(/ms/,"",v); return v } sub(/s/,"",v); return v*1000 }
    /Requests\/sec/ { rps=$2 } $1=="50%" { p50=ms($2) } $1=="99%" { p99=ms($2) }
    END { print rps, p50, p99 }'
}
col() { cut -d' ' -f"$2" "$W/$1.txt" | median; }

echo "closed model, $CONNS connections, ${SECS}s rounds (req/s p50_ms p99_ms)"
run_ttfb >/dev/null; run_oha >/dev/null   # warm-up
for t in oha ttfb wrk; do : > "$W/$t.txt"; done
for r in $(seq "$ROUNDS"); do
  for t in oha ttfb wrk; do "run_$t" >> "$W/$t.txt"; done
  echo "round $r: oha $(tail -1 "$W/oha.txt") | ttfb $(tail -1 "$W/ttfb.txt") | wrk $(tail -1 "$W/wrk.txt")"
done
for t in oha ttfb wrk; do echo "median $t: $(col $t 1) req/s, p50 $(col $t 2) ms, p99 $(col $t 3) ms"; done
awk -v a="$(col ttfb 1)" -v b="$(col oha 1)" -v c="$(col wrk 1)" 'BEGIN { printf "rate driven: ttfb/oha %.2fx, ttfb/wrk %.2fx\n", a/b, a/c }'

RATE=$(awk -v a="$(col ttfb 1)" -v b="$(col oha 1)" 'BEGIN { m = a < b ? a : b; printf "%d", m / 2 }')
echo "open model at $RATE req/s, corrected for coordinated omission (achieved req/s p50_ms p99_ms)"
for t in oha ttfb; do : > "$W/$t-open.txt"; done
for r in $(seq "$ROUNDS"); do
  run_oha "-q $RATE --latency-correction" >> "$W/oha-open.txt"
  run_ttfb "--rate $RATE" >> "$W/ttfb-open.txt"
  echo "round $r: oha $(tail -1 "$W/oha-open.txt") | ttfb $(tail -1 "$W/ttfb-open.txt")"
done
for t in oha-open ttfb-open; do echo "median $t: $(col $t 1) req/s, p50 $(col $t 2) ms, p99 $(col $t 3) ms"; done
awk -v a="$(col ttfb-open 2)" -v b="$(col oha-open 2)" -v c="$(col ttfb-open 3)" -v d="$(col oha-open 3)" \
  'BEGIN { printf "ttfb/oha at the same rate: p50 %.2fx, p99 %.2fx\n", a/b, c/d }'
