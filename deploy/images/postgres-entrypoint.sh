#!/bin/sh
# The part of the official postgres image's entrypoint that shopmesh uses, for the PostgreSQL
# image scripts/build-image.sh makes from Debian's package: on an empty PGDATA, initdb with
# POSTGRES_USER / POSTGRES_PASSWORD (scram-sha-256 over TCP), run
# /docker-entrypoint-initdb.d/*.sql once, then run the server in the foreground.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
sockets=/var/run/postgresql
[ -w "$sockets" ] || sockets=/tmp
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile="$(mktemp)"
  printf '%s' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}" >"$pwfile"
  initdb -D "$PGDATA" -E UTF8 --locale=C.UTF-8 -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-k $sockets -c listen_addresses=''" -w start
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] && psql -v ON_ERROR_STOP=1 -h "$sockets" -U "$POSTGRES_USER" -d postgres -f "$f"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec postgres -D "$PGDATA" -k "$sockets"
