#!/usr/bin/env bash
# Installs the HTTP/3 tests' client, once per machine: a venv at $H3_HOME
# (default /opt/edgepop-h3) holding aioquic 1.7.2 (with pylsqpack,
# pyopenssl, service-identity, cryptography). tests/h3/client.py runs on it,
# so edgepop's QUIC listener is checked by a client that shares none of its
# code (not quinn, not rustls). Quiet, and instant when already done.
set -euo pipefail
H3_HOME=${H3_HOME:-/opt/edgepop-h3}

done_already() { "$H3_HOME/bin/python" -c 'import aioquic' >/dev/null 2>&1; }
done_already && exit 0

mkdir -p "$(dirname "$H3_HOME")"
# Tests may call this concurrently: one installer at a time.
exec 9>"$H3_HOME.lock"
flock 9
done_already && exit 0

py=/usr/bin/python3
[[ -x $py ]] || py=$(command -v python3)
if [[ ! -x $H3_HOME/bin/python ]] && ! "$py" -m venv "$H3_HOME" >/dev/null 2>&1; then
  rm -rf "$H3_HOME"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  "$py" -m venv "$H3_HOME"
fi
"$H3_HOME/bin/pip" install -q --disable-pip-version-check aioquic==1.7.2
