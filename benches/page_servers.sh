# The cached-page setup shared by page.sh, page_tls.sh and idle.sh (source
# it after lib.sh): one 8 KiB storefront page, the same bytes for both;
# edgepop serves it from its replica + cache on 19080 (HTTP) and 19543
# (HTTPS), nginx from proxy_cache in front of an nginx origin on 19180
# and 19443; both with the same self-made ECDSA P-256 certificate for
# shop.bench and the same keep-alive limits (1,000,000 requests, 60 s).
bench_site
bench_cert
NOFILE=$(ulimit -n)

start_nginx origin "user root; worker_processes 1; daemon on; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:19101; root $W; default_type text/html; location / { try_files /page.html =404; } } }"

mkdir -p "$W/nginx-cache"
CACHE_CONF="user root; worker_processes 2; daemon on; pid $W/cache.pid; error_log $W/cache.err;
worker_rlimit_nofile $NOFILE;
events { worker_connections $(( NOFILE - 100 )); }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
  proxy_cache_path $W/nginx-cache keys_zone=pages:10m;
  server { listen 127.0.0.1:19180; listen 127.0.0.1:19443 ssl http2; server_name shop.bench;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_cache pages; proxy_cache_valid 200 1h; proxy_pass http://127.0.0.1:19101;
      add_header x-edge-cache \$upstream_cache_status; add_header x-edge-route bench1; } } }"
start_nginx cache "$CACHE_CONF"

CONF=$(edgepop_conf page "[pools.public]
servers = [{ addr = \"127.0.0.1:19101\" }]
$TLS_SECTION")
"$EDGEPOP" replica load "$W/snapshot.jsonl" --config "$CONF" >/dev/null

start_edgepop() {
  "$EDGEPOP" run --config "$CONF" 2>"$W/edgepop.err" &
  EDGE_PID=$!
  wait_http http://127.0.0.1:19190/healthz
}
# Fill both caches and show what each answers.
check_page() {
  for url in http://127.0.0.1:19080/ http://127.0.0.1:19180/; do curl -s -o /dev/null -H 'Host: shop.bench' "$url"; done
  for url in http://127.0.0.1:19080/ http://127.0.0.1:19180/ https://shop.bench:19543/ https://shop.bench:19443/; do
    echo "$url: $(curl -s -o /dev/null --cacert "$W/cert.pem" --resolve shop.bench:19543:127.0.0.1 --resolve shop.bench:19443:127.0.0.1 \
      -w '%{http_code} %{size_download} bytes %{http_version}' -H 'Host: shop.bench' "$url") $(curl -s -D - -o /dev/null -H 'Host: shop.bench' \
      --cacert "$W/cert.pem" --resolve shop.bench:19543:127.0.0.1 --resolve shop.bench:19443:127.0.0.1 "$url" | grep -i '^x-edge-cache' | tr -d '\r')"
  done
}
