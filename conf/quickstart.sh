#!/usr/bin/env bash
# Runs the edge node on its defaults: conf/quickstart.toml, one PoP, the
# embedded replica loaded with a demo store (shop.localhost, pages served by
# the edge), a config site demo.localhost proxied to a demo origin (conf/demo)
# on 127.0.0.1:8081.
#   curl -i -H 'Host: shop.localhost' http://127.0.0.1:8080/
set -euo pipefail
cd "$(dirname "$0")/.."
bash conf/build-deps.sh
cargo build --release --locked
./target/release/edgepop replica load conf/demo/snapshot.jsonl --config conf/quickstart.toml
python3 -m http.server 8081 --bind 127.0.0.1 --directory conf/demo >/dev/null 2>&1 &
origin=$!
trap 'kill $origin 2>/dev/null' EXIT
echo "edgepop on http://127.0.0.1:8080 and https://127.0.0.1:8443, admin on http://127.0.0.1:9180/status"
echo "  curl -i -H 'Host: shop.localhost' http://127.0.0.1:8080/"
echo "  curl -i --cacert target/quickstart-data/tls/ca/ca.pem --resolve shop.localhost:8443:127.0.0.1 https://shop.localhost:8443/"
./target/release/edgepop run --config conf/quickstart.toml
