#!/usr/bin/env bash
# A cached storefront page over HTTP/1.1 keep-alive: edgepop serving it from
# its replica + cache vs nginx serving the same bytes from proxy_cache
# (benches/page_servers.sh). The third argument is the connections: 64, and
# 1000 for many clients.
#   bash benches/page.sh [rounds=3] [seconds=10] [connections=64]
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}
source benches/page_servers.sh
start_edgepop
check_page
compare "$ROUNDS" http://127.0.0.1:19080/ http://127.0.0.1:19180/ shop.bench nginx-proxy_cache
