#!/usr/bin/env bash
# A multi-PoP anycast lab on one machine, in network namespaces (root):
#
#   client ── router (BIRD 2, AS 65000) ──┬── PoP 1 (edgepop, BIRD 2, origin, replica)
#                                         ├── PoP 2 ...
#
# Every PoP announces the anycast address 10.99.0.1/32 over BGP while its
# edgepop is ready (`edgepop anycast` drives its BIRD); the router prefers
# PoP 1, then PoP 2... PoPs relay to each other over mutual TLS.
#
#   bash conf/lab.sh up [POPS]     # default POPS="fra1 ams1"; builds the binary if needed
#   bash conf/lab.sh curl [PATH]   # from the client: curl -i http://10.99.0.1/ (Host demo.localhost)
#   bash conf/lab.sh route         # the router's route to the anycast address
#   bash conf/lab.sh stop POP [SIGNAL]   # signal (default TERM) a PoP's edgepop
#   bash conf/lab.sh start POP     # start a PoP's edgepop again
#   bash conf/lab.sh client ARGS   # run a command in the client namespace
#   bash conf/lab.sh replica-stop POP / replica-start POP   # cut / restore a PoP's replica
#                                  # (LAB_REPLICA=postgres: each PoP's own database on the
#                                  # machine's PostgreSQL, reached through a socket relay)
#   bash conf/lab.sh down          # remove everything the lab made
#
# LAB (default "eplab") names the namespaces; LAB_DIR (default
# /tmp/$LAB) holds configs, logs and sockets; EDGEPOP the binary (default
# target/release/edgepop). Addresses exist only inside the namespaces.
# LAB_TLS=1: every PoP also serves HTTPS on 443 and HTTP/3 on UDP 443 with
# one static certificate for demo.localhost ($LAB_DIR/pki/web.pem, signed by
# $LAB_DIR/pki/web-ca.pem, the root a client trusts); LAB_QUIC_RESET_KEY
# sets the same tls.quic_reset_key on every PoP (unset: each process its
# own); LAB_PROXY holds lines of a [proxy] table (e.g. 'keepalive_timeout = "10s"').
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${LAB:-eplab}
LAB_DIR=${LAB_DIR:-/tmp/$LAB}
EDGEPOP=${EDGEPOP:-$PWD/target/release/edgepop}
ANYCAST=10.99.0.1
ns() { echo "$LAB-$1"; }
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }
pops() { cat "$LAB_DIR/pops"; }
# Runs a command in namespace $1 in the background, output to $2, its pid
# (the command's own: `ip netns exec` execs it) into $3.
bg_ns() {
  local n log=$2 pidfile=$3; n=$(ns "$1"); shift 3
  ip netns exec "$n" "$@" </dev/null >>"$log" 2>&1 &
  echo $! >"$pidfile"
}

need() {
  bash conf/build-deps.sh bird2 iproute2 openssl curl >/dev/null
  [ -x "$EDGEPOP" ] || cargo build --release --locked
}

# Writes PoP i's configs (edgepop, BIRD) and content.
pop_files() {
  local i=$1 pop=$2 d="$LAB_DIR/$pop" peers="" j=0 other
  mkdir -p "$d/www"
  echo "origin $pop" >"$d/www/index.html"
  echo ok >"$d/www/health"
  for other in $(pops); do
    j=$((j + 1))
    [ "$other" = "$pop" ] && continue
    peers+="[[peers]]
pop = \"$other\"
addr = \"10.210.$j.2:8444\"
"
  done
  cat >"$d/edgepop.toml" <<EOF
[pop]
id = "$pop"
[listen]
http = ["0.0.0.0:80"]
[admin]
listen = "127.0.0.1:9180"
[server]
upgrade_sock = "$d/upgrade.sock"
pid_file = "$d/edgepop.pid"
drain_timeout = "10s"
[log]
access = "$d/access.log"
level = "info"
$(replica_section "$pop")
[pools.public]
servers = [{ addr = "127.0.0.1:9001" }]
health = { path = "/health", interval = "500ms", timeout = "500ms", rise = 1, fall = 1 }
[[sites]]
hostname = "demo.localhost"
store_id = 2
tier = "public"
[peering]
listen = ["10.210.$i.2:8444"]
ca = "$LAB_DIR/pki/ca.pem"
cert = "$LAB_DIR/pki/$pop.pem"
key = "$LAB_DIR/pki/$pop.key"
check = { interval = "250ms", timeout = "500ms", rise = 1, fall = 1 }
$peers
[anycast]
prefix = "$ANYCAST/32"
socket = "$d/bird.ctl"
check_interval = "100ms"
check_timeout = "200ms"
fall = 2
rise = 5
withdraw_grace = "1s"
$(tls_section "$pop")
EOF
  cat >"$d/bird.conf" <<EOF
router id 10.210.$i.2;
protocol device {}
# Held disabled until edgepop anycast finds the node ready.
protocol static edgepop_anycast {
  disabled;
  ipv4;
  route $ANYCAST/32 blackhole;
}
protocol bgp upstream {
  local 10.210.$i.2 as $((65000 + i));
  neighbor 10.210.$i.1 as 65000;
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  ipv4 { import none; export where proto = "edgepop_anycast"; next hop self; };
}
EOF
}

# LAB_TLS=1: [tls] (HTTPS and QUIC on 443, the lab's static certificate);
# LAB_PROXY: a [proxy] table. Nothing without them.
tls_section() {
  local d="$LAB_DIR/$1"
  if [ -n "${LAB_TLS:-}" ]; then
    printf '[tls]\nlisten = ["0.0.0.0:443"]\ndir = "%s"\n' "$d/tls"
    [ -z "${LAB_QUIC_RESET_KEY:-}" ] || printf 'quic_reset_key = "%s"\n' "$LAB_QUIC_RESET_KEY"
    printf '[[tls.certificates]]\nhostnames = ["demo.localhost"]\ncert = "%s"\nkey = "%s"\n' "$LAB_DIR/pki/web.pem" "$LAB_DIR/pki/web.key"
  fi
  [ -z "${LAB_PROXY:-}" ] || printf '[proxy]\n%s\n' "$LAB_PROXY"
}

# The web certificate every PoP serves with LAB_TLS (as an operator's
# static certificate shared by the PoPs), and the root that signed it.
web_cert() {
  local dir="$LAB_DIR/pki" ext
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=edgepop lab web CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/web-ca.key" -out "$dir/web-ca.pem" 2>/dev/null
  ext=$(mktemp)
  printf 'subjectAltName=DNS:demo.localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=demo.localhost" -keyout "$dir/web.key" -out "$dir/web.csr" 2>/dev/null
  openssl x509 -req -in "$dir/web.csr" -CA "$dir/web-ca.pem" -CAkey "$dir/web-ca.key" \
    -CAcreateserial -days 30 -extfile "$ext" -out "$dir/web.pem" 2>/dev/null
  rm -f "$ext" "$dir/web.csr"
}

# LAB_REPLICA=postgres: a database per PoP on 127.0.0.1:5432, reached from
# the PoP's namespace through a Unix socket that socat relays (cutting the
# relay is the replica going away); default: an embedded replica file.
replica_section() {
  local pop=$1 d="$LAB_DIR/$1"
  if [ "${LAB_REPLICA:-embedded}" = postgres ]; then
    printf '[replica]\nkind = "postgres"\nurl = "host=%s user=postgres dbname=%s_%s connect_timeout=1"\nping_interval = "100ms"\n' "$d/pg" "$LAB" "$pop"
  else
    printf '[replica]\nkind = "embedded"\npath = "%s"\nping_interval = "100ms"\n' "$d/replica.redb"
  fi
}

replica_start() {
  local pop=$1 d="$LAB_DIR/$1"
  [ "${LAB_REPLICA:-embedded}" = postgres ] || return 0
  mkdir -p "$d/pg"; rm -f "$d/pg/.s.PGSQL.5432"
  socat "UNIX-LISTEN:$d/pg/.s.PGSQL.5432,fork,mode=777" TCP:127.0.0.1:5432 </dev/null >/dev/null 2>&1 &
  echo $! >"$d/replica.lab-pid"
  for _ in $(seq 1 50); do [ -S "$d/pg/.s.PGSQL.5432" ] && break; sleep 0.02; done
}

replica_stop() {
  local d="$LAB_DIR/$1"
  # The relay and every connection it forked.
  pkill -9 -f "UNIX-LISTEN:$d/pg/" 2>/dev/null || true
}

router_files() {
  local d="$LAB_DIR/router" i=0 pop
  mkdir -p "$d"
  {
    echo "router id 10.210.0.1;"
    echo "protocol device {}"
    echo "protocol kernel { ipv4 { import none; export all; }; }"
    for pop in $(pops); do
      i=$((i + 1))
      cat <<EOF
protocol bgp $pop {
  local 10.210.$i.1 as 65000;
  neighbor 10.210.$i.2 as $((65000 + i));
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  # Nearer PoPs first: PoP 1 is preferred, then PoP 2...
  ipv4 { import filter { bgp_local_pref = $((300 - i)); accept; }; export none; };
}
EOF
    done
  } >"$d/bird.conf"
}

start_pop() {
  local pop=$1 d="$LAB_DIR/$1"
  bg_ns "$pop" "$d/edgepop.log" "$d/edgepop.lab-pid" "$EDGEPOP" run --config "$d/edgepop.toml"
}

up() {
  local list=${1:-fra1 ams1} i=0 pop
  need
  [ "${LAB_REPLICA:-embedded}" = postgres ] && bash conf/build-deps.sh socat >/dev/null
  down quiet
  mkdir -p "$LAB_DIR"
  echo "$list" >"$LAB_DIR/pops"
  bash conf/peering-certs.sh "$LAB_DIR/pki" $list
  [ -z "${LAB_TLS:-}" ] || web_cert
  # Client and router.
  ip netns add "$(ns client)"; ip netns add "$(ns router)"
  ip link add "${LAB}c0" type veth peer name "${LAB}r0"
  ip link set "${LAB}c0" netns "$(ns client)"; ip link set "${LAB}r0" netns "$(ns router)"
  in_ns client ip addr add 10.210.0.2/24 dev "${LAB}c0"
  in_ns router ip addr add 10.210.0.1/24 dev "${LAB}r0"
  for n in client router; do in_ns $n ip link set lo up; done
  in_ns client ip link set "${LAB}c0" up; in_ns router ip link set "${LAB}r0" up
  in_ns client ip route add default via 10.210.0.1
  in_ns router sysctl -qw net.ipv4.ip_forward=1
  for pop in $(pops); do
    i=$((i + 1))
    ip netns add "$(ns "$pop")"
    ip link add "${LAB}p$i" type veth peer name "${LAB}q$i"
    ip link set "${LAB}p$i" netns "$(ns "$pop")"; ip link set "${LAB}q$i" netns "$(ns router)"
    in_ns "$pop" ip addr add "10.210.$i.2/24" dev "${LAB}p$i"
    in_ns router ip addr add "10.210.$i.1/24" dev "${LAB}q$i"
    in_ns "$pop" ip link set lo up; in_ns "$pop" ip link set "${LAB}p$i" up
    in_ns router ip link set "${LAB}q$i" up
    in_ns "$pop" ip addr add "$ANYCAST/32" dev lo
    in_ns "$pop" ip route add default via "10.210.$i.1"
    pop_files "$i" "$pop"
    in_ns "$pop" bird -c "$LAB_DIR/$pop/bird.conf" -s "$LAB_DIR/$pop/bird.ctl" -P "$LAB_DIR/$pop/bird.pid" </dev/null >/dev/null 2>&1
    bg_ns "$pop" /dev/null "$LAB_DIR/$pop/origin.lab-pid" python3 -m http.server 9001 --bind 127.0.0.1 --directory "$LAB_DIR/$pop/www"
    if [ "${LAB_REPLICA:-embedded}" = postgres ]; then
      psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${LAB}_$pop" -c "CREATE DATABASE ${LAB}_$pop" >/dev/null
      replica_start "$pop"
    fi
    "$EDGEPOP" replica init --config "$LAB_DIR/$pop/edgepop.toml" >/dev/null
    "$EDGEPOP" replica load conf/demo/snapshot.jsonl --config "$LAB_DIR/$pop/edgepop.toml" >/dev/null
    start_pop "$pop"
    bg_ns "$pop" "$LAB_DIR/$pop/anycast.log" "$LAB_DIR/$pop/anycast.lab-pid" "$EDGEPOP" anycast --config "$LAB_DIR/$pop/edgepop.toml"
  done
  router_files
  in_ns router bird -c "$LAB_DIR/router/bird.conf" -s "$LAB_DIR/router/bird.ctl" -P "$LAB_DIR/router/bird.pid" </dev/null >/dev/null 2>&1
  echo "lab $LAB up: PoPs $(pops); anycast $ANYCAST; files in $LAB_DIR"
  echo "  bash conf/lab.sh curl          # which PoP answers (x-edge-route)"
  echo "  bash conf/lab.sh stop $(pops | cut -d' ' -f1)     # SIGTERM it; the next answer comes from another PoP"
}

down() {
  local n p
  for p in $(ls -d "$LAB_DIR"/*/ 2>/dev/null); do replica_stop "$(basename "$p")"; done
  for p in "$LAB_DIR"/*/*.lab-pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for p in "$LAB_DIR"/*/bird.pid "$LAB_DIR"/*/edgepop.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for n in $(ip netns list | awk '{print $1}' | grep "^$LAB-" || true); do
    # Whatever still runs in the namespace goes with it.
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n"
  done
  if [ -f "$LAB_DIR/pops" ] && [ "${LAB_REPLICA:-embedded}" = postgres ]; then
    for p in $(pops); do psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${LAB}_$p" >/dev/null 2>&1 || true; done
  fi
  rm -rf "$LAB_DIR"
  [ "${1:-}" = quiet ] || echo "lab $LAB removed"
}

case "${1:-}" in
  up) up "${2:-}" ;;
  down) down ;;
  curl) in_ns client curl -sS -i --max-time 5 -H "Host: ${HOST:-demo.localhost}" "http://$ANYCAST${2:-/}" ;;
  route) in_ns router birdc -s "$LAB_DIR/router/bird.ctl" show route "$ANYCAST/32" all ;;
  anycast-metrics) in_ns "$2" curl -sS --max-time 5 http://127.0.0.1:9181/metrics ;;
  stop) pid=$(cat "$LAB_DIR/$2/edgepop.lab-pid"); kill -"${3:-TERM}" "$pid" ;;
  start) start_pop "$2" ;;
  client) shift; in_ns client "$@" ;;
  replica-stop) replica_stop "$2" ;;
  replica-start) replica_start "$2" ;;
  *) sed -n '2,29p' "$0"; exit 2 ;;
esac
