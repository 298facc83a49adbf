-- name: OutboxInsert :exec
-- Queues a command's events for the relay and wakes it. The NOTIFY is only a
-- hint, delivered at commit; the relay polls as well.
WITH queued AS (
    INSERT INTO outbox (position, partition)
    SELECT unnest(@positions::bigint[]), unnest(@partitions::smallint[])
    RETURNING 1
)
SELECT pg_notify('epoch_outbox', '') FROM (SELECT 1 FROM queued LIMIT 1) AS any_queued;

-- name: OutboxPartitionsPending :many
-- The partitions that have rows: one index probe per partition, however
-- large the backlog (a DISTINCT would read every row).
SELECT p::smallint AS partition
FROM generate_series(0, sqlc.arg(partition_count)::integer - 1) AS p
WHERE EXISTS (SELECT 1 FROM outbox WHERE outbox.partition = p)
ORDER BY p;

-- name: OutboxPartitionsLock :many
-- Takes, for the rest of the transaction, the relay lock of up to
-- max_count of the given partitions, skipping those another relay holds.
-- The LIMIT stops the scan, so no more locks are taken than returned.
SELECT p::smallint AS partition
FROM unnest(@partitions::smallint[]) AS p
WHERE pg_try_advisory_xact_lock(@lock_key::integer, p::integer)
LIMIT @max_count::integer;

-- name: OutboxClaim :many
-- The oldest rows of the locked partitions with their events, in position
-- (= per-stream version) order.
SELECT o.position, o.partition, o.created_at,
       e.id, e.stream_type, e.stream_id, e.version, e.type, e.data, e.occurred_at
FROM outbox AS o
JOIN events AS e ON e.position = o.position
WHERE o.partition = ANY(@partitions::smallint[])
ORDER BY o.position
LIMIT @max_count::integer;

-- name: OutboxDelete :execrows
-- Removes rows the broker confirmed.
DELETE FROM outbox WHERE position = ANY(@positions::bigint[]);

-- name: OutboxBacklog :one
-- How many rows wait and how old the oldest is, in seconds.
SELECT count(*)::bigint AS pending,
       coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS oldest_age_seconds
FROM outbox;

-- name: OutboxOldestOpenTransaction :many
-- The oldest other transaction of this database that has written
-- something: its outbox rows, if any, are invisible to the relay until it
-- ends.
SELECT pid::integer AS pid,
       extract(epoch FROM clock_timestamp() - xact_start)::float8 AS age_seconds
FROM pg_catalog.pg_stat_activity
WHERE datname = current_database()
  AND backend_xid IS NOT NULL
  AND pid <> pg_backend_pid()
ORDER BY xact_start
LIMIT 1;

-- name: OutboxRelayAsyncCommit :exec
-- The relay's transaction only deletes rows the broker already has: if
-- Postgres crashed before that commit reached disk, the rows would simply
-- be relayed again (at-least-once). So it need not wait for the WAL flush.
SELECT set_config('synchronous_commit', 'off', true);
