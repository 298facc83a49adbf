#!/bin/sh
# Run once by the postgres image's entrypoint when it makes the primary's
# data folder (profile `pgpair` of docker-compose.yml): the standby may
# stream from it, as the database's own user (a superuser, which may
# replicate), with the same password as everyone.
set -eu
echo "host replication $POSTGRES_USER all scram-sha-256" >>"$PGDATA/pg_hba.conf"
