#!/usr/bin/env bash
# New TLS handshakes per second: edgepop vs nginx, the same ECDSA P-256
# certificate (a static certificate in edgepop), h2load opening a new
# connection per request, alternating rounds. Then an sslscan of edgepop's
# listener.
#   bash benches/tls.sh [rounds=3] [batches=10]
source "$(dirname "$0")/lib.sh"
bash conf/build-deps.sh sslscan nghttp2-client
ROUNDS=${1:-3}; SECS=${2:-10}
bench_cert

start_nginx tls "user root; worker_processes 2; daemon on; pid $W/tls.pid; error_log $W/tls.err;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:19443 ssl; server_name shop.bench;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { return 200 ok; } } }"

CONF=$(edgepop_conf tls "[pools.public]
servers = [{ addr = \"127.0.0.1:9\" }]
health = { enabled = false }
[[sites]]
hostname = \"shop.bench\"
store_id = 1
tier = \"public\"
$TLS_SECTION")
"$EDGEPOP" run --config "$CONF" 2>"$W/edgepop.err" &
wait_http http://127.0.0.1:19190/healthz

# handshakes PORT -> new TLS connections per second: h2load with as many
# clients as requests (a fresh handshake per request), SNI shop.bench.
handshakes() {
  h2load --h1 -t 2 -c 400 -n 400 --connect-to=127.0.0.1:"$1" https://shop.bench/ 2>/dev/null \
    | awk '/^finished in/ { gsub(/,/, ""); print $4 }'
}
: > "$W/e"; : > "$W/n"
for r in $(seq "$ROUNDS"); do
  for _ in $(seq "$SECS"); do handshakes 19543; done | median >> "$W/e"
  for _ in $(seq "$SECS"); do handshakes 19443; done | median >> "$W/n"
  echo "round $r: edgepop $(tail -1 "$W/e")/s  nginx $(tail -1 "$W/n")/s"
done
E=$(median < "$W/e"); N=$(median < "$W/n")
echo "median new handshakes/s: edgepop $E, nginx $N"
awk -v a="$E" -v b="$N" 'BEGIN { printf "ratio edgepop/nginx: %.2fx\n", a/b }'

echo; echo "sslscan of edgepop (127.0.0.1:19543, SNI shop.bench):"
sslscan --no-colour --sni-name=shop.bench 127.0.0.1:19543 | sed -n '/SSL\/TLS Protocols/,$p'
