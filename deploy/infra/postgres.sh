#!/bin/sh
# PostgreSQL for the compose stack: a cluster in $PGDATA made on first start, one database
# per service, listening on 127.0.0.1:$PGPORT only (host networking), trust for loopback.
set -eu
: "${PGDATA:=/var/lib/postgresql/gatemesh}" "${PGPORT:=55432}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U postgres -A trust >/dev/null
  pg_ctl -D "$PGDATA" -o "-p $PGPORT -k /tmp -c listen_addresses=127.0.0.1" -w start >/dev/null
  for db in auth billing proxy privacy; do
    psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE gatemesh_$db"
  done
  pg_ctl -D "$PGDATA" -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -p "$PGPORT" -k /tmp -c listen_addresses=127.0.0.1
