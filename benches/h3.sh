#!/usr/bin/env bash
# HTTP/3 (issue 28): the cached 8 KiB page (benches/page_servers.sh: same
# page, same self-made certificate) over h3 and h2 from edgepop, beside
# Caddy 2.6 (Debian's; quic-go) serving the same bytes as a static file
# with the same certificate over h3 and h2. One client for all:
# `edgepop ttfb` (--http3 / --http2, `ttfb --threads` = one per CPU).
#  1. load: CONNS connections, one request at a time each, SECS per round,
#     alternating rounds, medians: req/s, p99 TTFB, server CPU per request
#     (utime+stime of its process over the requests answered);
#  2. system calls per request (strace -c -f on the server during
#     STRACE_N requests), then the UDP sends and receives decoded (bytes
#     per call, GSO/GRO segments);
#  3. the handshake: a new connection per request (--new-connections,
#     4 at a time): the tls phase (QUIC: the whole handshake), connect
#     (TCP), and the whole time to first byte;
#  4. memory per idle connection: IDLE_N h3 (and h2 over TLS) connections
#     after one request each (benches/h3_idle.py, aioquic), server RSS
#     held (read HOLD s after they are all up) minus before, each server
#     freshly started;
# Instructions per request are not counted: `perf stat -e instructions`
# has no hardware counter in these VMs, and callgrind was not run here.
# The load average (/proc/loadavg) is printed with each round: the machine
# is shared.
#   bash benches/h3.sh [rounds=3] [seconds=10] [connections=64] [idle=2000] [hold=15]
source "$(dirname "$0")/lib.sh"
bash conf/build-deps.sh caddy strace valgrind
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}; IDLE_N=${4:-2000}; HOLD=${5:-15}
STRACE_N=${STRACE_N:-20000}
PY=${H3_PYTHON:-/opt/edgepop-h3/bin/python}
source benches/page_servers.sh
# Idle connections come from one address (127.0.0.1) and wait HOLD s.
sed -i 's/^threads = 2$/threads = 2\nmax_connections_per_client = 100000/' "$CONF"
sed -i 's/^keepalive_requests = 1000000$/keepalive_requests = 1000000\nkeepalive_timeout = "120s"/' "$CONF"
"$EDGEPOP" check --config "$CONF" >/dev/null

# Caddy on 19643 (TCP: h1, h2; UDP: h3), the page as a file.
mkdir -p "$W/caddy-root" "$W/caddy-home"
cp "$W/page.html" "$W/caddy-root/index.html"
cat > "$W/Caddyfile" <<CADDY
{
	admin off
	auto_https disable_redirects
	servers {
		protocols h1 h2 h3
	}
}
https://shop.bench:19643 {
	bind 127.0.0.1
	tls $W/cert.pem $W/key.pem
	root * $W/caddy-root
	file_server
	header x-edge-route bench1
}
CADDY
start_caddy() {
  HOME=$W/caddy-home XDG_DATA_HOME=$W/caddy-home XDG_CONFIG_HOME=$W/caddy-home \
    caddy run --adapter caddyfile --config "$W/Caddyfile" >"$W/caddy.log" 2>&1 &
  CADDY_PID=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null --cacert "$W/cert.pem" --resolve shop.bench:19643:127.0.0.1 https://shop.bench:19643/ && return 0; sleep 0.1; done
  return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
start_edgepop
start_caddy
check_page >/dev/null

pid_of() { [ "$1" = edgepop ] && echo "$EDGE_PID" || echo "$CADDY_PID"; }
port_of() { [ "$1" = edgepop ] && echo 19543 || echo 19643; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# ttfb SERVER PROTO ARGS... -> JSON in $W/t.json
ttfb() {
  local server=$1 proto=$2 port; shift 2
  port=$(port_of "$server")
  "$EDGEPOP" ttfb "https://shop.bench:$port/" --resolve "shop.bench:$port:127.0.0.1" --cacert "$W/cert.pem" \
    "--$proto" -q --json "$W/t.json" "$@"
}
# summary: "req/s p50_ms p99_ms responses errors tls_p50 connect_p50 body_bytes" from $W/t.json
summary() {
  python3 - "$W/t.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); t = r["targets"][0]
g = max(r["groups"], key=lambda g: g["requests"])
err = t["errors"] if isinstance(t["errors"], int) else sum(t["errors"].values())
ph = g["phases"]
print(t["rate_rps"], t["latency"]["p50_ms"], t["latency"]["p99_ms"], t["responses"], err,
      ph["tls"]["p50_ms"], ph["connect"]["p50_ms"], g["bytes"] // max(g["requests"], 1))
PY
}
# load SERVER PROTO [ARGS...] -> "req/s p50 p99 cpu_us_per_request tls_p50 connect_p50"
load() {
  local server=$1 proto=$2 pid t0 t1 s; shift 2
  pid=$(pid_of "$server"); t0=$(ticks "$pid")
  ttfb "$server" "$proto" "$@"
  t1=$(ticks "$pid"); s=$(summary)
  set -- $s
  [ "$5" = 0 ] || echo "  ($server $proto: $5 errors)" >&2
  awk -v rps="$1" -v p50="$2" -v p99="$3" -v n="$4" -v d=$(( t1 - t0 )) -v hz="$HZ" -v tls="$6" -v con="$7" \
    'BEGIN { printf "%.0f %.3f %.3f %.1f %.3f %.3f\n", rps, p50, p99, d / hz * 1e6 / n, tls, con }'
}
CASES="edgepop:http3 edgepop:http2 caddy:http3 caddy:http2"
echo "== what each answers (body bytes per response, errors)"
for c in $CASES; do
  ttfb "${c%:*}" "${c#*:}" -n 200 -c 4; echo "$c: $(summary | awk '{ print $8 " bytes, " $5 " errors" }')"
done
curl -s -D - -o /dev/null --cacert "$W/cert.pem" --resolve shop.bench:19543:127.0.0.1 https://shop.bench:19543/ | tr -d '\r' | sed 's/^/  edgepop h2: /'
curl -s -D - -o /dev/null --cacert "$W/cert.pem" --resolve shop.bench:19643:127.0.0.1 https://shop.bench:19643/ | tr -d '\r' | sed 's/^/  caddy h2: /'

col() { cut -d' ' -f"$2" "$W/$1.txt" | median; }
name() { echo "${1/:/-}"; }
echo "== 1. cached page, $CONNS connections, ${SECS}s rounds (req/s p50_ms p99_ms cpu_us/req)"
for c in $CASES; do load "${c%:*}" "${c#*:}" -c "$CONNS" -d 2s >/dev/null; : > "$W/$(name "$c").txt"; done   # warm-up
for r in $(seq "$ROUNDS"); do
  line="round $r (load $(cut -d' ' -f1 /proc/loadavg)):"
  for c in $CASES; do
    load "${c%:*}" "${c#*:}" -c "$CONNS" -d "${SECS}s" >> "$W/$(name "$c").txt"
    line="$line  $c $(tail -1 "$W/$(name "$c").txt" | cut -d' ' -f1-4)"
  done
  echo "$line"
done
for c in $CASES; do
  n=$(name "$c"); echo "median $c: $(col "$n" 1) req/s, p50 $(col "$n" 2) ms, p99 $(col "$n" 3) ms, CPU $(col "$n" 4) us/request"
done
ratio() { awk -v a="$(col "$(name "$1")" "$3")" -v b="$(col "$(name "$2")" "$3")" 'BEGIN { printf "%.2fx", a / b }'; }
for pair in "edgepop:http3 edgepop:http2" "edgepop:http3 caddy:http3" "edgepop:http2 caddy:http2" "caddy:http3 caddy:http2"; do
  set -- $pair
  echo "ratio $1 / $2: req/s $(ratio "$1" "$2" 1), p99 $(ratio "$1" "$2" 3), CPU/request $(ratio "$1" "$2" 4)"
done

echo "== 2. system calls per request (strace -c -f, $STRACE_N requests, $CONNS connections)"
for c in $CASES; do
  server=${c%:*}; proto=${c#*:}; pid=$(pid_of "$server")
  strace -q -c -f -p "$pid" -o "$W/strace.txt" &
  ST=$!; sleep 1
  ttfb "$server" "$proto" -c "$CONNS" -n "$STRACE_N"
  kill -INT $ST; wait $ST 2>/dev/null || true
  n=$(summary | cut -d' ' -f4)
  echo "-- $c: $n requests, $(awk -v n="$n" '$NF == "total" { printf "%.2f", $4 / n }' "$W/strace.txt") system calls per request"
  awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { printf "  %-16s %8.3f per request\n", $NF, $4 / n }' "$W/strace.txt" | sort -k2 -nr | head -10
done
echo "-- UDP I/O decoded (strace -f, 2,000 requests, $CONNS connections): calls per request, bytes per call, GSO/GRO"
for server in edgepop caddy; do
  pid=$(pid_of "$server")
  strace -q -f -p "$pid" -e trace=sendmsg,sendmmsg,sendto,recvmsg,recvmmsg,recvfrom -e verbose=all -e abbrev=none -s 1 -o "$W/udp.txt" &
  ST=$!; sleep 1
  ttfb "$server" http3 -c "$CONNS" -n 2000
  kill -INT $ST; wait $ST 2>/dev/null || true
  n=$(summary | cut -d' ' -f4)
  python3 - "$W/udp.txt" "$n" "$server" <<'PY'
import re, sys
n = int(sys.argv[2]); calls = {}
for line in open(sys.argv[1]):
    m = re.search(r"\b(sendmsg|sendmmsg|sendto|recvmsg|recvmmsg|recvfrom)\((\d+),.*= (-?\d+)", line)
    if not m:
        continue
    name, ret = m.group(1), int(m.group(3))
    c = calls.setdefault(name, dict(calls=0, ok=0, bytes=0, gso=0, gro=0, msgs=0))
    c["calls"] += 1
    if ret < 0:
        continue
    c["ok"] += 1
    if name in ("sendmmsg", "recvmmsg"):
        c["msgs"] += ret
        c["bytes"] += sum(int(x) for x in re.findall(r"(?<![a-z_])msg_len=(\d+)", line))
    else:
        c["msgs"] += 1; c["bytes"] += ret
    c["gso"] += line.count("cmsg_type=0x67") + line.count("UDP_SEGMENT")  # strace names neither
    c["gro"] += line.count("cmsg_type=0x68") + line.count("UDP_GRO")
for name, c in sorted(calls.items()):
    print(f"  {sys.argv[3]} {name}: {c['calls']/n:.2f} calls per request ({c['calls']-c['ok']} failed, EAGAIN),"
          f" {c['msgs']/max(c['ok'],1):.2f} datagrams or buffers per successful call, {c['bytes']/max(c['msgs'],1):.0f} bytes each,"
          f" UDP_SEGMENT (GSO) on {c['gso']}, UDP_GRO on {c['gro']} of them")
PY
done

echo "== 3. handshakes: a new connection per request, 4 at a time, ${SECS}s rounds (req/s ttfb_p50 ttfb_p99 cpu_us/req tls_p50 connect_p50)"
for c in $CASES; do load "${c%:*}" "${c#*:}" -c 4 -d 2s --new-connections >/dev/null; : > "$W/hs-$(name "$c").txt"; done
for r in $(seq "$ROUNDS"); do
  line="round $r (load $(cut -d' ' -f1 /proc/loadavg)):"
  for c in $CASES; do
    load "${c%:*}" "${c#*:}" -c 4 -d "${SECS}s" --new-connections >> "$W/hs-$(name "$c").txt"
    line="$line  $c $(tail -1 "$W/hs-$(name "$c").txt")"
  done
  echo "$line"
done
for c in $CASES; do
  n=hs-$(name "$c")
  echo "median $c: $(col "$n" 1) new connections/s, first byte p50 $(col "$n" 2) ms p99 $(col "$n" 3) ms, tls p50 $(col "$n" 5) ms, connect p50 $(col "$n" 6) ms, CPU $(col "$n" 4) us/connection"
done

echo "== 4. memory per idle connection: $IDLE_N after one request each, RSS read ${HOLD}s after they are all up"
rss() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
declare -A R
for c in $CASES; do
  server=${c%:*}; proto=${c#*:}
  # Each on a fresh start, warmed by 2 s of load on both protocols.
  stop "$EDGE_PID"; stop "$CADDY_PID"; sleep 0.5
  if [ "$server" = edgepop ]; then start_edgepop; else start_caddy; fi
  for p in http2 http3; do ttfb "$server" $p -c 8 -d 2s; done
  sleep 2; pid=$(pid_of "$server"); base=$(rss "$pid")
  "$PY" benches/h3_idle.py "${proto/http/h}" "127.0.0.1:$(port_of "$server")" "$IDLE_N" "$W/cert.pem" > "$W/held" 2>"$W/held.err" &
  CLIENT=$!
  for _ in $(seq 1 3000); do [ -s "$W/held" ] && break; sleep 0.1; done
  sleep 1; HELD=$(cat "$W/held"); HELD=${HELD:-0}; first=$(rss "$pid")
  [ "$HELD" -gt 0 ] || echo "$c: the client held nothing after 300 s (its errors: $(head -3 "$W/held.err"))"
  sleep "$HOLD"; held=$(rss "$pid")
  stop "$CLIENT"
  R[$c]=$(( (held - base) * 1024 / (HELD > 0 ? HELD : 1) ))
  echo "$c: $HELD idle connections ($(sort "$W/held.err" | uniq -c | head -3 | tr '\n' ' ')): RSS $base -> $first KiB when held -> $held KiB ${HOLD}s later, ${R[$c]} bytes each"
done
awk -v a="${R[edgepop:http3]}" -v b="${R[edgepop:http2]}" -v c="${R[caddy:http3]}" \
  'BEGIN { printf "ratio edgepop h3 / edgepop h2: %.2fx; edgepop h3 / caddy h3: %.2fx\n", a / b, a / c }'

