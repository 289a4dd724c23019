#!/usr/bin/env bash
# First-handshake time for a new name: edgepop vs Caddy `on_demand_tls`,
# both ordering from the same pebble (PEBBLE_VA_NOSLEEP=1, HTTP-01, the
# account made beforehand), on the same ports, alternating rounds of N
# new names each. The time is curl's time_appconnect: TCP connect + the
# TLS handshake, which waits for the order, the validation and the
# certificate.
#   bash benches/acme.sh [rounds=3] [names per round=10]
source "$(dirname "$0")/lib.sh"
bash conf/build-deps.sh pebble caddy
ROUNDS=${1:-3}; N=${2:-10}
HTTP=19080; HTTPS=19543

# Pebble's own HTTPS listener: a throwaway CA and a certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$W/ca.key" -out "$W/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=pebble \
  -keyout "$W/pebble.key" -out "$W/pebble.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$W/ext"
openssl x509 -req -in "$W/pebble.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
  -days 2 -extfile "$W/ext" -out "$W/pebble.pem" 2>/dev/null
cat > "$W/pebble.json" <<CONF
{"pebble": {"listenAddress": "127.0.0.1:19400", "managementListenAddress": "127.0.0.1:19401",
  "certificate": "$W/pebble.pem", "privateKey": "$W/pebble.key",
  "httpPort": $HTTP, "tlsPort": $HTTPS, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
CONF
pebble-challtestsrv -http01 "" -https01 "" -tlsalpn01 "" -dns01 127.0.0.1:19053 \
  -management 127.0.0.1:19055 -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$W/challtestsrv.log" 2>&1 &
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
  pebble -config "$W/pebble.json" -dnsserver 127.0.0.1:19053 >"$W/pebble.log" 2>&1 &
for _ in $(seq 1 50); do curl -s --cacert "$W/ca.pem" -o "$W/root.pem" https://127.0.0.1:19401/roots/0 && break; sleep 0.1; done

# Every name either server will be asked for: n<round>-<i>.<server>.bench.
names() { for i in $(seq 0 "$N"); do echo "n$2-$i.$1.bench"; done; }

# first_handshake NAME -> seconds until the TLS handshake finished.
first_handshake() {
  curl -s -o /dev/null -w '%{time_appconnect}\n' --max-time 30 --cacert "$W/root.pem" \
    --resolve "$1:$HTTPS:127.0.0.1" "https://$1:$HTTPS/" || true
}

SITES=""
for r in $(seq 0 "$ROUNDS"); do for h in $(names edgepop "$r"); do
  SITES+="[[sites]]
hostname = \"$h\"
store_id = 1
tier = \"public\"
"; done; done
CONF=$(edgepop_conf acme "[listen]
http = [\"127.0.0.1:$HTTP\"]
[pools.public]
servers = [{ addr = \"127.0.0.1:9\" }]
health = { enabled = false }
$SITES
[tls]
listen = [\"127.0.0.1:$HTTPS\"]
dir = \"$W/edgepop-tls\"
issue_timeout = \"30s\"
[tls.acme]
directory = \"https://127.0.0.1:19400/dir\"
ca_root = \"$W/ca.pem\"
challenge = \"http-01\"")
sed -i '3,4d' "$CONF"   # edgepop_conf's own [listen] table: replaced above

cat > "$W/Caddyfile" <<CONF
{
  admin off
  http_port $HTTP
  https_port $HTTPS
  acme_ca https://127.0.0.1:19400/dir
  acme_ca_root $W/ca.pem
  storage file_system $W/caddy
  skip_install_trust
  on_demand_tls {
    interval 1s
    burst 10000
  }
  log {
    output file $W/caddy.log
  }
}
https:// {
  tls {
    on_demand
    issuer acme {
      disable_tlsalpn_challenge
    }
  }
  respond "ok"
}
CONF

run_edgepop() { "$EDGEPOP" run --config "$CONF" 2>>"$W/edgepop.err" & PID=$!; wait_http http://127.0.0.1:19190/healthz; }
run_caddy() { caddy run --config "$W/Caddyfile" --adapter caddyfile >>"$W/caddy.out" 2>&1 & PID=$!; for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$HTTP/" && break; sleep 0.1; done; }
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; sleep 0.3; }

# round SERVER R -> one time per new name; name 0 is a warm-up (the first
# round makes the ACME account).
round() {
  "run_$1"
  local first=1
  for h in $(names "$1" "$2"); do
    t=$(first_handshake "$h")
    if [ $first = 1 ]; then first=0; else echo "$t"; fi
  done
  stop
}

: > "$W/e"; : > "$W/c"
for r in $(seq 1 "$ROUNDS"); do
  round edgepop "$r" > "$W/e.$r"; cat "$W/e.$r" >> "$W/e"
  round caddy "$r" > "$W/c.$r"; cat "$W/c.$r" >> "$W/c"
  echo "round $r: edgepop median $(median < "$W/e.$r") s  caddy median $(median < "$W/c.$r") s"
done
failed_e=$(grep -c '^0\(\.0*\)\?$' "$W/e" || true); failed_c=$(grep -c '^0\(\.0*\)\?$' "$W/c" || true)
E=$(median < "$W/e"); C=$(median < "$W/c")
echo "first handshakes: edgepop $(wc -l < "$W/e") (failed $failed_e), caddy $(wc -l < "$W/c") (failed $failed_c)"
echo "median first-handshake time: edgepop ${E}s, caddy ${C}s"
awk -v a="$E" -v b="$C" 'BEGIN { printf "ratio edgepop/caddy: %.2fx\n", a/b }'
echo "pebble orders: $(grep -c 'Added order' "$W/pebble.log")"
