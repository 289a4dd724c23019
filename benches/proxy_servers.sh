# The proxied-GET setup shared by proxy.sh and syscalls.sh (source it
# after lib.sh): three nginx origins serving 1 KiB; edgepop's pool of the
# three on 19080 vs nginx least_conn with upstream keep-alive on 19180.
head -c 1024 /dev/zero | tr '\0' 'x' > "$W/page.html"

start_nginx origin "user root; worker_processes 1; daemon on; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19101; listen 127.0.0.1:19102; listen 127.0.0.1:19103; root $W; location / { try_files /page.html =404; } } }"

start_nginx proxy "user root; worker_processes 2; daemon on; pid $W/proxy.pid; error_log $W/proxy.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream public { least_conn; server 127.0.0.1:19101; server 127.0.0.1:19102; server 127.0.0.1:19103; keepalive 128; }
  server { listen 127.0.0.1:19180;
    location / { proxy_pass http://public; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      add_header x-edge-route bench1; } } }"

CONF=$(edgepop_conf proxy '[pools.public]
servers = [{ addr = "127.0.0.1:19101" }, { addr = "127.0.0.1:19102" }, { addr = "127.0.0.1:19103" }]
health = { path = "/", interval = "5s" }
[[sites]]
hostname = "shop.bench"
store_id = 1
tier = "public"')
start_edgepop() {
  "$EDGEPOP" run --config "$CONF" 2>"$W/edgepop.err" &
  EDGE_PID=$!
  wait_http http://127.0.0.1:19190/healthz
}
