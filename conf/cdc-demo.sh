#!/usr/bin/env bash
# The quickstart with the real change stream: a central PostgreSQL primary
# (its own cluster, under target/cdc-demo), the real Debezium PostgreSQL
# connector, a tansu Kafka broker and the edge node, all on 127.0.0.1.
# Change a row in the central database and watch the edge serve it:
#   psql -h 127.0.0.1 -p 5440 -U postgres -c "UPDATE pages SET body = '<h1>new</h1>', version = version + 1 WHERE path = '/'"
#   curl -i -H 'Host: shop.localhost' http://127.0.0.1:8080/
# First run: installs tansu (cargo, ~8 min), Java and Debezium's jars.
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_PORT=${PG_PORT:-5440} KAFKA_PORT=${KAFKA_PORT:-9092}
bash conf/build-deps.sh
bash tests/cdc/install.sh
command -v tansu >/dev/null || cargo install --locked tansu@0.6.0 --features dynostore
cargo build --release --locked

W=target/cdc-demo
rm -rf "$W" && mkdir -p "$W"
W=$(cd "$W" && pwd)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  bash tests/cdc/primary.sh stop "$W/primary"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash tests/cdc/primary.sh start "$W/primary" "$PG_PORT"
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres <<'SQL'
CREATE TABLE domains(hostname text PRIMARY KEY, store_id bigint NOT NULL, status text NOT NULL,
                     tier text NOT NULL, version bigint NOT NULL);
CREATE TABLE pages(store_id bigint, path text, content_type text NOT NULL, body text NOT NULL,
                   status int NOT NULL DEFAULT 200, cache_control text, version bigint NOT NULL,
                   updated_at timestamptz NOT NULL, PRIMARY KEY (store_id, path));
INSERT INTO domains VALUES ('shop.localhost', 1, 'active', 'public', 1);
INSERT INTO pages VALUES (1, '/', 'text/html; charset=utf-8', '<h1>Demo shop</h1>', 200, 'public, max-age=60', 1, now());
SQL

tansu broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --storage-engine memory://tansu/ >"$W/tansu.log" 2>&1 &
pids+=($!)
PG_PORT=$PG_PORT BOOTSTRAP=127.0.0.1:$KAFKA_PORT TOPIC_PREFIX=cdc WORK_DIR="$W/connect" SCHEMAS=false \
  bash tests/cdc/connect.sh >"$W/connect.stderr" 2>&1 &
pids+=($!)

sed -e "s#../target/quickstart-data#$W/edge#" conf/quickstart.toml > "$W/edgepop.toml"
cat >> "$W/edgepop.toml" <<EOF

[sync]
brokers = "127.0.0.1:$KAFKA_PORT"
topics = ["cdc.public.domains", "cdc.public.pages"]
EOF
python3 -m http.server 8081 --bind 127.0.0.1 --directory conf/demo >/dev/null 2>&1 &
pids+=($!)

echo "central database: psql -h 127.0.0.1 -p $PG_PORT -U postgres   (tables domains, pages)"
echo "edge:             curl -i -H 'Host: shop.localhost' http://127.0.0.1:8080/"
echo "try:              psql -h 127.0.0.1 -p $PG_PORT -U postgres -c \"UPDATE pages SET body = '<h1>new</h1>', version = version + 1 WHERE path = '/'\""
# In the background with `wait`, so a signal reaches the trap at once.
./target/release/edgepop run --config "$W/edgepop.toml" &
pids+=($!)
wait "$!"
