#!/usr/bin/env bash
# The PoP CA and PoP certificates of the peer channel (mutual TLS between
# PoPs), made with openssl. Usage:
#   bash conf/peering-certs.sh DIR POP [POP...]
# DIR/ca.pem + DIR/ca.key: the operator's PoP CA, made on first use and kept
# after (keep ca.key off the PoPs). DIR/<pop>.pem + DIR/<pop>.key: each PoP's
# certificate, whose DNS name is its PoP id (server and client use).
# Point a PoP's [peering] ca / cert / key at DIR/ca.pem, DIR/<pop>.pem and
# DIR/<pop>.key. DAYS (default 825) sets the certificates' lifetime.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR POP [POP...]" >&2; exit 2; }
dir=$1; shift
days=${DAYS:-825}
mkdir -p "$dir"
if [ ! -f "$dir/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days "$((days * 2))" -subj "/CN=edgepop PoP CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  chmod 600 "$dir/ca.key"
fi
for pop in "$@"; do
  [[ $pop =~ ^[a-z0-9_-]{1,32}$ ]] || { echo "invalid PoP id: $pop" >&2; exit 2; }
  ext=$(mktemp)
  printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$pop" >"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$pop" -keyout "$dir/$pop.key" -out "$dir/$pop.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$pop.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days "$days" -extfile "$ext" -out "$dir/$pop.pem" 2>/dev/null
  rm -f "$ext" "$dir/$pop.csr"
  chmod 600 "$dir/$pop.key"
done
