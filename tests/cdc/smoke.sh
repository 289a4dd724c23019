#!/usr/bin/env bash
# End-to-end check by hand: tansu + primary + Debezium, DML, dump of every record.
#   tests/cdc/smoke.sh [--schemas true|false] [--out DIR] [--fixture PATH_PREFIX]
#                      [--extra] [--restart] [--keep]
# Needs tansu on PATH (tests/run.sh installs it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/install.sh"
exec "${CDC_HOME:-/opt/edgepop-cdc}/bin/python" "$here/smoke.py" "$@"
