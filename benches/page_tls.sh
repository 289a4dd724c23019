#!/usr/bin/env bash
# The cached page over HTTPS (benches/page_servers.sh: same certificate,
# same bytes): HTTP/2 and HTTP/1.1, each measured with h2load (one stream
# at a time per connection, keep-alive, SNI shop.bench), edgepop vs nginx,
# alternating rounds. p99 from h2load's per-request log.
#   bash benches/page_tls.sh [rounds=3] [seconds=10] [connections=64]
source "$(dirname "$0")/lib.sh"
bash conf/build-deps.sh nghttp2-client openssl
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}
source benches/page_servers.sh
start_edgepop
check_page

# h2 PROTO PORT -> "req/s p99_ms"
h2() {
  local flag=; [ "$1" = h1 ] && flag=--h1
  h2load $flag -t 2 -c "$CONNS" -m 1 -D "$SECS" --warm-up-time=1 --log-file="$W/h2.log" \
    --connect-to=127.0.0.1:"$2" https://shop.bench/ > "$W/h2.out" 2>&1
  local rps p99
  rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$W/h2.out")
  # Log lines: start time (µs), status, duration (µs).
  p99=$(awk '{print $3}' "$W/h2.log" | sort -n | awk '{a[NR]=$1} END { printf "%.3f", a[int(NR*0.99)]/1000 }')
  grep -q "status codes: .* 0 3xx, 0 4xx, 0 5xx" "$W/h2.out" || { echo "errors:"; cat "$W/h2.out"; }
  echo "$rps $p99"
}
for proto in h2 h1; do
  h2 $proto 19543 >/dev/null; h2 $proto 19443 >/dev/null   # warm-up
  : > "$W/e.txt"; : > "$W/p.txt"
  for r in $(seq "$ROUNDS"); do
    h2 $proto 19543 >> "$W/e.txt"; h2 $proto 19443 >> "$W/p.txt"
    echo "$proto round $r: edgepop $(tail -1 "$W/e.txt")  nginx $(tail -1 "$W/p.txt")  (req/s p99_ms)"
  done
  er=$(cut -d' ' -f1 "$W/e.txt" | median); ep=$(cut -d' ' -f2 "$W/e.txt" | median)
  pr=$(cut -d' ' -f1 "$W/p.txt" | median); pp=$(cut -d' ' -f2 "$W/p.txt" | median)
  echo "$proto median edgepop: $er req/s, p99 $ep ms; nginx: $pr req/s, p99 $pp ms"
  awk -v a="$er" -v b="$pr" -v c="$ep" -v d="$pp" -v p="$proto" 'BEGIN { printf "%s ratio edgepop/nginx: req/s %.2fx, p99 %.2fx\n", p, a/b, c/d }'
done
