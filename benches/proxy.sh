#!/usr/bin/env bash
# Proxied GET through a 3-server least-connections pool: edgepop vs nginx
# (least_conn, upstream keepalive), same origins, same wrk load, alternating
# rounds in one run. Prints the median of each and the ratios.
#
#   bash benches/proxy.sh [rounds=3] [seconds=10] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}
for tool in nginx wrk cmake; do
  command -v $tool >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk cmake >/dev/null; break; }
done
cargo build --release --locked -q
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; nginx -p "$W" -c "$W/proxy.conf" -s stop 2>/dev/null; nginx -p "$W" -c "$W/origin.conf" -s stop 2>/dev/null; rm -rf "$W"' EXIT
head -c 1024 /dev/zero | tr '\0' 'x' > "$W/page.html"

# Origins: one nginx worker serving a 1 KiB page on three ports.
cat > "$W/origin.conf" <<CONF
worker_processes 1; daemon on; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19101; listen 127.0.0.1:19102; listen 127.0.0.1:19103; root $W; location / { try_files /page.html =404; } } }
CONF
nginx -p "$W" -c "$W/origin.conf"

cat > "$W/proxy.conf" <<CONF
worker_processes 2; daemon on; pid $W/proxy.pid; error_log $W/proxy.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream public { least_conn; server 127.0.0.1:19101; server 127.0.0.1:19102; server 127.0.0.1:19103; keepalive 128; }
  server { listen 127.0.0.1:19180;
    location / { proxy_pass http://public; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      add_header x-edge-route bench1; } } }
CONF
nginx -p "$W" -c "$W/proxy.conf"

cat > "$W/edgepop.toml" <<CONF
[pop]
id = "bench1"
[listen]
http = ["127.0.0.1:19080"]
[admin]
listen = "127.0.0.1:19190"
[server]
threads = 2
upgrade_sock = "$W/up.sock"
pid_file = "$W/edgepop.pid"
[log]
access = "off"
level = "warn"
[pools.public]
servers = [{ addr = "127.0.0.1:19101" }, { addr = "127.0.0.1:19102" }, { addr = "127.0.0.1:19103" }]
health = { path = "/", interval = "5s" }
[[sites]]
hostname = "shop.bench"
store_id = 1
tier = "public"
CONF
./target/release/edgepop run --config "$W/edgepop.toml" 2>"$W/edgepop.err" &
sleep 1

# wrk prints "Requests/sec: N" and, with --latency, "99% Xms|us|s".
measure() { # url -> "rps p99_ms"
  wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H 'Host: shop.bench' "$1" | awk '
    /Requests\/sec/ { rps=$2 }
    $1=="99%" { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v=v/1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v=v*1000 } p99=v }
    END { print rps, p99 }'
}
median() { sort -g | awk '{a[NR]=$1} END { print a[int((NR+1)/2)] }'; }

measure http://127.0.0.1:19080/ >/dev/null; measure http://127.0.0.1:19180/ >/dev/null  # warm-up
: > "$W/e"; : > "$W/n"
for r in $(seq "$ROUNDS"); do
  measure http://127.0.0.1:19080/ >> "$W/e"
  measure http://127.0.0.1:19180/ >> "$W/n"
  echo "round $r: edgepop $(tail -1 "$W/e")  nginx $(tail -1 "$W/n")  (req/s p99_ms)"
done
E_RPS=$(cut -d' ' -f1 "$W/e" | median); E_P99=$(cut -d' ' -f2 "$W/e" | median)
N_RPS=$(cut -d' ' -f1 "$W/n" | median); N_P99=$(cut -d' ' -f2 "$W/n" | median)
echo "median edgepop: ${E_RPS} req/s, p99 ${E_P99} ms"
echo "median nginx:   ${N_RPS} req/s, p99 ${N_P99} ms"
awk -v a="$E_RPS" -v b="$N_RPS" -v c="$E_P99" -v d="$N_P99" 'BEGIN { printf "ratio edgepop/nginx: req/s %.2fx, p99 %.2fx\n", a/b, c/d }'
