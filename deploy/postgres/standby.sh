#!/bin/sh
# The standby of profile `pgpair` of docker-compose.yml, run as the
# postgres user. A first start makes its data folder a base backup of the
# primary (pg_basebackup, retried until the primary answers) that streams
# from it as application_name epoch_standby, the name the primary's
# synchronous_standby_names waits for; later starts run what is there,
# which after a promotion is a primary of its own.
set -eu
: "${PRIMARY_HOST:?}" "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}"
export PGPASSWORD="$POSTGRES_PASSWORD"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_basebackup -h "$PRIMARY_HOST" -U "$POSTGRES_USER" -D "$PGDATA" -X stream -c fast; do
    echo "standby: waiting for the primary at $PRIMARY_HOST" >&2
    rm -rf "${PGDATA:?}"/*
    sleep 2
  done
  chmod 700 "$PGDATA"
  touch "$PGDATA/standby.signal"
  echo "primary_conninfo = 'host=$PRIMARY_HOST port=5432 user=$POSTGRES_USER password=$POSTGRES_PASSWORD application_name=epoch_standby'" >>"$PGDATA/postgresql.auto.conf"
fi
# Once promoted it waits for no standby of its own: nobody follows it
# until an operator makes the old primary a standby again.
exec postgres -c hot_standby=on -c synchronous_standby_names=''
