#!/usr/bin/env bash
# Proxied GET through a 3-server least-connections pool: edgepop vs nginx
# (least_conn, upstream keepalive), same origins, same wrk load.
#   bash benches/proxy.sh [rounds=3] [seconds=10] [connections=64]
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}
source benches/proxy_servers.sh
start_edgepop
for url in http://127.0.0.1:19080/ http://127.0.0.1:19180/; do
  echo "$url: $(curl -s -o /dev/null -w '%{http_code} %{size_download} bytes' -H 'Host: shop.bench' $url)"
done
compare "$ROUNDS" http://127.0.0.1:19080/ http://127.0.0.1:19180/ shop.bench nginx
