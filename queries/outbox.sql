-- name: OutboxInsert :exec
-- Queues a command's events for the relay and wakes it. The NOTIFY is only a
-- hint, delivered at commit; the relay polls as well.
WITH queued AS (
    INSERT INTO outbox (position, partition)
    SELECT unnest(@positions::bigint[]), unnest(@partitions::smallint[])
    RETURNING 1
)
SELECT pg_notify('epoch_outbox', '') FROM (SELECT 1 FROM queued LIMIT 1) AS any_queued;
