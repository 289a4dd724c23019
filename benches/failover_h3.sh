#!/usr/bin/env bash
# Failover over HTTP/3 in the multi-PoP lab (conf/lab.sh with LAB_TLS=1:
# BIRD 2 router, PoPs fra1 and ams1 serving HTTPS and QUIC on 443 with one
# shared static certificate), beside the TCP figure of benches/failover.sh:
#   - HTTP/3 load (benches/lab_load_h3.py: 4 workers, each ONE long-lived
#     QUIC connection, requests one after another, a new connection when
#     one ends or a request fails); fra1's edgepop SIGTERMed or killed 2 s
#     into each round; ROUNDS rounds of each, first with the same
#     tls.quic_reset_key on both PoPs ("shared"), then without ("own": each
#     process its own key);
#   - TCP: TCP_ROUNDS rounds of benches/failover.sh's (lab_load.py, a new
#     connection per request) in the "shared" lab.
# The PoPs' proxy.keepalive_timeout (the QUIC idle timeout) is 10 s, so a
# connection left for dead shows; each HTTP/3 round runs 16 s. Per round:
# time from the signal to the first answer from ams1 (first worker, and
# every worker), failed requests by kind, how the connections open at the
# signal ended, and the stateless resets ams1 sent / the packets it dropped
# (quinn's debug lines in its log).
#   bash benches/failover_h3.sh [ROUNDS] [TCP_ROUNDS]     (root; default 5 and 3)
# EDGEPOP: the binary (default target/release/edgepop, built if missing);
# H3_KEYS (default "shared own"): which labs to run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
TCP_ROUNDS=${2:-3}
H3_KEYS=${H3_KEYS:-shared own}
export LAB=${LAB:-eph3bench}
export LAB_DIR=/tmp/$LAB
export EDGEPOP=${EDGEPOP:-$PWD/target/release/edgepop}
export LAB_TLS=1
export LAB_PROXY='keepalive_timeout = "10s"
keepalive_requests = 1000000'
# ams1's resets (or the packets it drops instead) in its log.
export RUST_LOG="info,quinn_proto::endpoint=debug"
PY=/opt/edgepop-h3/bin/python
H3_SECONDS=16
bash conf/build-deps.sh bird2 iproute2 curl openssl >/dev/null
[ -x "$PY" ] || bash tests/h3/install.sh >/dev/null
[ -x "$EDGEPOP" ] || cargo build --release --locked -q
trap 'bash conf/lab.sh down >/dev/null' EXIT
OUT=/tmp/$LAB-results
mkdir -p "$OUT"
results="$OUT/rounds.jsonl"
: >"$results"

route() { bash conf/lab.sh route 2>/dev/null | grep -m1 'unicast \[' | sed 's/.*\[\([a-z0-9_-]*\) .*/\1/'; }
until_route() { for _ in $(seq 1 1500); do [ "$(route)" = "$1" ] && return 0; sleep 0.02; done; echo "route never via $1" >&2; exit 1; }

round() { # CASE (tcp|shared|own) SIGNAL ROUND -> one JSON line
  local case=$1 sig=$2 n=$3
  local out="$OUT/$case-$sig-$n.json" load lines
  until_route fra1
  sleep 1
  lines=$(wc -l <"$LAB_DIR/ams1/edgepop.log")
  if [ "$case" = tcp ]; then
    bash conf/lab.sh client python3 benches/lab_load.py 10.99.0.1 demo.localhost 5 4 "$out" >/dev/null &
  else
    bash conf/lab.sh client "$PY" benches/lab_load_h3.py 10.99.0.1 demo.localhost "$H3_SECONDS" 4 "$out" \
      --ca "$LAB_DIR/pki/web-ca.pem" >/dev/null &
  fi
  load=$!
  sleep 2
  local t; t=$(date +%s.%N)
  bash conf/lab.sh stop fra1 "$sig"
  wait $load
  tail -n +"$((lines + 1))" "$LAB_DIR/ams1/edgepop.log" >"$OUT/$case-$sig-$n.ams1.log"
  python3 - "$out" "$t" "$case" "$sig" "$OUT/$case-$sig-$n.ams1.log" <<'PY'
import json, sys
data = json.load(open(sys.argv[1])); t = float(sys.argv[2])
recs, conns = data["records"], data.get("connections", [])
ok = lambda r: r.get("status") == 200 and "error" not in r  # headers without the body's end: failed
ams1 = [r for r in recs if ok(r) and r.get("route") == "ams1" and r["t"] >= t]
first = min((r["done"] for r in ams1), default=None)
per_worker = {}
for r in ams1:
    per_worker[r.get("worker", 0)] = min(per_worker.get(r.get("worker", 0), r["done"]), r["done"])
kinds = {}
for r in recs:
    if not ok(r):
        k = r.get("error", f"status {r.get('status')}"); kinds[k] = kinds.get(k, 0) + 1
# The connections open at the signal: how and when each ended.
ended = [(c.get("why"), round(c["end"] - t, 3) if c.get("end") else None,
          round(c["goaway_at"] - t, 3) if c.get("goaway_at") else None, c.get("undecryptable", 0))
         for c in conns if c["t"] < t and (c.get("end") or 1e18) >= t]
log = open(sys.argv[5]).read()
print(json.dumps({
    "case": sys.argv[3], "signal": sys.argv[4], "requests": len(recs),
    "to_ams1_s": None if first is None else round(first - t, 3),
    "all_workers_s": round(max(per_worker.values()) - t, 3) if len(per_worker) == 4 else None,
    "failed": kinds,
    "failed_at_s": [(round(r["t"] - t, 3), round(r["done"] - t, 3)) for r in recs if not ok(r)][:8],
    "open_at_signal": ended,
    "ams1_resets_sent": log.count("sending stateless reset"),
    "ams1_dropped_invalid_cid": log.count("dropping packet with invalid CID"),
}))
PY
  # fra1's edgepop again (a SIGTERMed one has exited by now).
  sleep 1
  kill -9 "$(cat "$LAB_DIR/fra1/edgepop.lab-pid")" 2>/dev/null || true
  bash conf/lab.sh start fra1
}

for keys in $H3_KEYS; do
  if [ "$keys" = shared ]; then
    export LAB_QUIC_RESET_KEY=lab-quic-reset-key-shared-by-every-pop
  else
    unset LAB_QUIC_RESET_KEY
  fi
  bash conf/lab.sh up "fra1 ams1" >/dev/null
  for n in $(seq 1 "$ROUNDS"); do
    round "$keys" TERM "$n" | tee -a "$results"
    round "$keys" KILL "$n" | tee -a "$results"
  done
  if [ "$keys" = shared ]; then
    for n in $(seq 1 "$TCP_ROUNDS"); do
      round tcp TERM "$n" | tee -a "$results"
      round tcp KILL "$n" | tee -a "$results"
    done
  fi
  bash conf/lab.sh down >/dev/null
done

python3 - "$results" <<'PY'
import json, statistics, sys
rounds = [json.loads(l) for l in open(sys.argv[1])]
for case in ("shared", "own", "tcp"):
    for sig in ("TERM", "KILL"):
        rs = [r for r in rounds if r["case"] == case and r["signal"] == sig]
        if not rs:
            continue
        times = [r["to_ams1_s"] for r in rs if r["to_ams1_s"] is not None]
        alls = [r["all_workers_s"] for r in rs if r["all_workers_s"] is not None]
        failed = [sum(r["failed"].values()) for r in rs]
        kinds, why = {}, {}
        for r in rs:
            for k, v in r["failed"].items(): kinds[k] = kinds.get(k, 0) + v
            for w, *_ in r["open_at_signal"]: why[w] = why.get(w, 0) + 1
        med = lambda xs: f"{statistics.median(xs):.3f} s (max {max(xs):.3f})" if xs else "never"
        print(f"{case} SIG{sig}: {len(rs)} rounds, ~{statistics.median(r['requests'] for r in rs):.0f} requests a round; "
              f"first answer from ams1 {med(times)}; every worker {med(alls)}; "
              f"failed per round median {statistics.median(failed)} (all rounds: {kinds}); "
              f"connections open at the signal ended by {why}; "
              f"ams1 sent {sum(r['ams1_resets_sent'] for r in rs)} stateless resets, "
              f"dropped {sum(r['ams1_dropped_invalid_cid'] for r in rs)} packets as 'invalid CID'")
PY
