#!/usr/bin/env bash
# A throwaway PostgreSQL primary for the change-data-capture tests:
#   primary.sh start DIR PORT   initdb DIR if empty, start on 127.0.0.1:PORT, wait until ready
#   primary.sh stop DIR         fast shutdown (no error if not running)
# DIR is the data directory and also holds the unix socket and server.log.
# Trust auth for local and 127.0.0.1, so `psql -h 127.0.0.1 -p PORT -U postgres` works.
set -euo pipefail
cmd=${1:?usage: primary.sh start DIR PORT | stop DIR}
dir=${2:?data directory}
bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
# cd: postgres cannot read root's cwd, and pg_ctl complains about it.
pg() { (cd "$dir" && runuser -u postgres -- "$@"); }

case $cmd in
start)
  port=${3:?port}
  mkdir -p "$dir"
  chown postgres: "$dir"
  chmod 700 "$dir"
  # DIR often sits in a root-only (0700) temp dir: let postgres traverse (x only) its parents.
  d=$(dirname "$(realpath "$dir")")
  while [[ $d != / ]]; do
    runuser -u postgres -- test -x "$d" || chmod o+x "$d"
    d=$(dirname "$d")
  done
  if [[ ! -e $dir/PG_VERSION ]]; then
    pg "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    # fsync off: a test cluster, never needs to survive a machine crash.
    cat >>"$dir/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
fsync = off
full_page_writes = off
shared_buffers = 32MB
EOF
  fi
  # Port given on each start, so a restart may move it.
  if ! pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 -s -o "-p $port" start; then
    tail -20 "$dir/server.log" >&2
    exit 1
  fi
  ;;
stop)
  if [[ -e $dir/postmaster.pid ]]; then
    pg "$bin/pg_ctl" -D "$dir" -m fast -w -t 60 -s stop || true
  fi
  ;;
*) echo "usage: primary.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
