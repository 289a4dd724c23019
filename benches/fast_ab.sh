#!/usr/bin/env bash
# The same binary with proxy.fast_path on (19080) and off (19081), side by
# side on the same setup and load, alternating rounds, medians, ratios.
#   bash benches/fast_ab.sh [page|proxy] [rounds=3] [seconds=10] [connections=64]
source "$(dirname "$0")/lib.sh"
WHAT=${1:-proxy}; ROUNDS=${2:-3}; SECS=${3:-10}; CONNS=${4:-64}
source "benches/${WHAT}_servers.sh"
start_edgepop
sed -e 's/19080/19081/; s/19190/19191/; s#up.sock#up-off.sock#; s#edgepop.pid#edgepop-off.pid#' \
  -e "s#$W/replica.redb#$W/replica-off.redb#" \
  -e 's/^keepalive_requests = 1000000/keepalive_requests = 1000000\nfast_path = false/' "$CONF" > "$W/off.toml"
[ "$WHAT" = page ] && "$EDGEPOP" replica load "$W/snapshot.jsonl" --config "$W/off.toml" >/dev/null
"$EDGEPOP" run --config "$W/off.toml" 2>"$W/off.err" &
wait_http http://127.0.0.1:19191/healthz || { tail "$W/off.err"; exit 1; }
compare "$ROUNDS" http://127.0.0.1:19080/ http://127.0.0.1:19081/ shop.bench fast-path-off
