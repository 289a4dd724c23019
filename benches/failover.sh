#!/usr/bin/env bash
# Failover in the multi-PoP lab (conf/lab.sh: BIRD 2 router, PoPs fra1 and
# ams1), under steady load from the client namespace (benches/lab_load.py,
# 4 workers, a new connection per request):
#   - SIGTERM of the serving PoP's edgepop, and kill -9: time from the signal
#     to the first answer from ams1, requests failed (by kind); ROUNDS rounds;
#   - relay overhead: TTFB from the client of a page served by fra1 itself
#     vs relayed by fra1 to ams1 (fra1's origin stopped), and relay;dur.
#   bash benches/failover.sh [ROUNDS]      (root; default 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
export LAB=${LAB:-epbench}
export LAB_DIR=/tmp/$LAB
bash conf/build-deps.sh bird2 iproute2 curl >/dev/null
cargo build --release --locked -q
trap 'bash conf/lab.sh down >/dev/null' EXIT
bash conf/lab.sh up "fra1 ams1" >/dev/null

route() { bash conf/lab.sh route 2>/dev/null | grep -m1 'unicast \[' | sed 's/.*\[\([a-z0-9_-]*\) .*/\1/'; }
until_route() { for _ in $(seq 1 1500); do [ "$(route)" = "$1" ] && return 0; sleep 0.02; done; echo "route never via $1" >&2; exit 1; }

round() { # SIGNAL ROUND -> one JSON line
  local sig=$1 n=$2
  local out="$LAB_DIR/$sig-$n.json"
  until_route fra1
  sleep 1
  bash conf/lab.sh client python3 benches/lab_load.py 10.99.0.1 demo.localhost 5 4 "$out" >/dev/null &
  local load=$!
  sleep 2
  local t; t=$(date +%s.%N)
  bash conf/lab.sh stop fra1 "$sig"
  wait $load
  python3 - "$out" "$t" "$sig" <<'PY'
import json, sys
recs = json.load(open(sys.argv[1]))["records"]; t = float(sys.argv[2])
first = min((r["t"] for r in recs if r.get("route") == "ams1" and r["t"] >= t), default=None)
kinds = {}
for r in recs:
    if r.get("status") != 200:
        k = r.get("error", f"status {r.get('status')}"); kinds[k] = kinds.get(k, 0) + 1
failed_at = [(round(r["t"] - t, 3), round(r["done"] - t, 3)) for r in recs if r.get("status") != 200]
print(json.dumps({"signal": sys.argv[3], "requests": len(recs), "to_other_pop_s": None if first is None else round(first - t, 3), "failed": kinds, "failed_at_s": failed_at[:8]}))
PY
  # The lab's edgepop for fra1 again (a SIGTERMed one has exited by now).
  sleep 1
  pkill -9 -f "edgepop run --config $LAB_DIR/fra1/" 2>/dev/null || true
  bash conf/lab.sh start fra1
}

results="$LAB_DIR/rounds.jsonl"
for n in $(seq 1 "$ROUNDS"); do
  round TERM "$n" | tee -a "$results"
  round KILL "$n" | tee -a "$results"
done

# Relay overhead: 300 requests each, one connection each, TTFB from curl.
ttfb() { # -> "ttfb_ms relay_ms" lines
  for _ in $(seq 1 300); do
    bash conf/lab.sh client curl -s -o /dev/null -D - -H 'Host: demo.localhost' \
      -w 'TTFB %{time_starttransfer}\n' http://10.99.0.1/ |
      awk '/^TTFB/ { t=$2*1000 } /^server-timing/ { if (match($0, /relay;dur=[0-9.]+/)) r=substr($0, RSTART+10, RLENGTH-10) } END { print t, (r==""?0:r) }'
  done
}
until_route fra1
sleep 1
ttfb >"$LAB_DIR/local.txt"
kill -9 "$(cat "$LAB_DIR/fra1/origin.lab-pid")"
sleep 2 # fra1's health check marks its origin down; requests now relay to ams1
ttfb >"$LAB_DIR/relayed.txt"

python3 - "$results" "$LAB_DIR/local.txt" "$LAB_DIR/relayed.txt" <<'PY'
import json, statistics, sys
rounds = [json.loads(l) for l in open(sys.argv[1])]
for sig in ("TERM", "KILL"):
    rs = [r for r in rounds if r["signal"] == sig]
    times = [r["to_other_pop_s"] for r in rs if r["to_other_pop_s"] is not None]
    failed = [sum(r["failed"].values()) for r in rs]
    kinds = {}
    for r in rs:
        for k, v in r["failed"].items(): kinds[k] = kinds.get(k, 0) + v
    print(f"SIG{sig}: {len(rs)} rounds, to the other PoP median {statistics.median(times):.3f} s (max {max(times):.3f}), "
          f"failed per round median {statistics.median(failed)} (all rounds by kind: {kinds}), requests per round ~{rs[0]['requests']}")
def col(path, i): return [float(l.split()[i]) for l in open(path) if l.strip()]
local, relayed, relay = col(sys.argv[2], 0), col(sys.argv[3], 0), col(sys.argv[3], 1)
q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))]
print(f"TTFB local page p50 {q(local, .5):.2f} ms p99 {q(local, .99):.2f} ms; relayed p50 {q(relayed, .5):.2f} ms p99 {q(relayed, .99):.2f} ms; "
      f"added p50 {q(relayed, .5) - q(local, .5):.2f} ms; relay;dur p50 {q(relay, .5):.2f} ms")
PY
