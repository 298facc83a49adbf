-- name: OutboxInsert :batchexec
-- Queues a command's events for the relay, one row per run (see
-- outbox.Enqueue), each with the trace context of the transaction's
-- request (NULL: none). It does not wake the relay: see OutboxWake.
INSERT INTO outbox (position, last_position, partition, traceparent, tracestate)
SELECT unnest(@first_positions::bigint[]), unnest(@last_positions::bigint[]), unnest(@partitions::smallint[]),
       sqlc.narg(traceparent)::text, sqlc.narg(tracestate)::text;

-- name: OutboxWake :batchexec
-- Wakes the relays once a command has committed outbox rows (channel:
-- outbox.NotifyChannel): sent right after its COMMIT, in the same round
-- trip, as a transaction of its own (Tx.AfterCommit, from
-- outbox.Enqueue). A NOTIFY inside the command's own transaction would
-- take a database-wide lock at its commit and hold it through that
-- commit's WAL flush, so every command's commit waited for the one before
-- it. This one is only a hint, so it commits
-- without waiting for its flush: a hint lost in a crash just leaves the
-- rows to the relay's next poll.
SELECT pg_notify(@channel::text, '')
WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL;

-- name: OutboxPreferIndexes :batchexec
-- Keeps the relay's statements in this transaction off sequential scans
-- (sent first in the claim's batch; the setting ends with the
-- transaction). Postgres caches a generic plan after five runs, with the
-- estimates of that moment: made while events was a page or two, the
-- claim's per-row range read was a sequential scan, and stayed one as the
-- table grew, until an ANALYZE invalidated it; on a new database that is
-- minutes of scans that grow with every event. Planned with sequential
-- scans off ('off'), every plan the relay caches reads by index, and is
-- not made again each cycle.
SELECT set_config('enable_seqscan', @enable_seqscan::text, true);

-- name: OutboxPartitionsLock :batchmany
-- Finds and locks a cycle's partitions in one round trip:
-- 1. pending: the partitions that have rows, by a loose index scan (one
--    probe of outbox_partition_position_idx per partition present, however
--    large the backlog; a DISTINCT would read every row);
-- 2. eligible: those not in skip (the partitions this relay holds off
--    after a failed publish, until their wait is over);
-- 3. up to share × eligible of them, going round from start_at, each locked
--    for the rest of the transaction unless another relay holds it (the
--    fenced, ordered subquery makes the lock calls run in that order, and
--    the LIMIT stops them, so no more locks are taken than returned).
-- The rows are read by OutboxClaim, the next statement of the same batch:
-- its snapshot must be taken after the locks, or it could still see rows
-- another relay deleted just before letting go of the partition, and send
-- them again.
WITH RECURSIVE pending(partition) AS (
    SELECT min(o.partition) FROM outbox AS o
  UNION ALL
    SELECT (SELECT min(o.partition) FROM outbox AS o WHERE o.partition > pending.partition)
    FROM pending
    WHERE pending.partition IS NOT NULL
), eligible(partition) AS (
    SELECT pending.partition
    FROM pending
    WHERE pending.partition IS NOT NULL
      AND pending.partition <> ALL(coalesce(sqlc.arg(skip)::smallint[], '{}'))
)
SELECT ordered.partition::smallint AS partition
FROM (
    SELECT eligible.partition
    FROM eligible
    ORDER BY (eligible.partition - sqlc.arg(start_at)::integer + sqlc.arg(partition_count)::integer) % sqlc.arg(partition_count)::integer
    OFFSET 0
) AS ordered
WHERE pg_try_advisory_xact_lock(sqlc.arg(lock_key)::integer, ordered.partition::integer)
LIMIT (SELECT ceil(sqlc.arg(share)::float8 * count(*))::integer FROM eligible);

-- name: OutboxClaim :batchmany
-- The oldest rows of each partition this transaction locked (with
-- OutboxPartitionsLock, sent in the same batch: the locks are read back
-- from pg_locks, so this statement needs nothing from that one's answer),
-- with their events, in position (= per-stream version) order. Each
-- partition gets an equal share of batch_size: rows are taken whole, in
-- key order, while the events before them number fewer than that share
-- (so at least one row, however long): one short index range per
-- partition, the work bounded by the batch, not by the backlog.
WITH held AS (
    SELECT l.objid::bigint::smallint AS partition
    FROM pg_catalog.pg_locks AS l
    WHERE l.locktype = 'advisory'
      AND l.pid = pg_backend_pid()
      AND l.classid = sqlc.arg(lock_key)::integer::oid
      AND l.objsubid = 2
      AND l.granted
), share AS (
    SELECT greatest(1, ceil((sqlc.arg(batch_size)::integer)::float8 / nullif(count(*), 0)))::integer AS per_partition
    FROM held
)
SELECT o.position AS row_position, o.partition, o.created_at, o.traceparent, o.tracestate,
       e.position, e.id, e.stream_type, e.stream_id, e.version, e.type, e.data, e.occurred_at
FROM held AS p
CROSS JOIN share
CROSS JOIN LATERAL (
    SELECT head.position, head.last_position, head.partition, head.created_at, head.traceparent, head.tracestate
    FROM (
        -- The partition is matched as a range of one, and ordered on, so
        -- (partition, position) order is one only outbox_partition_position_idx
        -- gives. Matched by equality, the partition drops out of the order
        -- and the planner may walk outbox_pkey instead, filtering out every
        -- other partition's rows: it does when the statistics are of an
        -- earlier backlog of a few streams, which makes a partition look
        -- like most of the table.
        SELECT ob.position, ob.last_position, ob.partition, ob.created_at, ob.traceparent, ob.tracestate,
               sum(ob.last_position - ob.position + 1) OVER (ORDER BY ob.partition, ob.position)
                 - (ob.last_position - ob.position + 1) AS before
        FROM outbox AS ob
        WHERE ob.partition >= p.partition AND ob.partition <= p.partition
        ORDER BY ob.partition, ob.position
        LIMIT share.per_partition
    ) AS head
    WHERE head.before < share.per_partition
) AS o
CROSS JOIN LATERAL (
    -- A range scan of events_pkey per row. OFFSET 0 keeps the planner from
    -- flattening this into a join, where it may read the whole events
    -- table in position order to save a sort of a few hundred rows.
    SELECT ev.position, ev.id, ev.stream_type, ev.stream_id, ev.version, ev.type, ev.data, ev.occurred_at
    FROM events AS ev
    WHERE ev.position BETWEEN o.position AND o.last_position
    OFFSET 0
) AS e
ORDER BY e.position;

-- name: OutboxDelete :batchexec
-- Removes rows whose events the broker all confirmed. It also turns
-- synchronous_commit off for the rest of the relay's transaction (the
-- InitPlan runs once): the commit only records that the broker has these
-- events, and if Postgres lost it in a crash they would simply be relayed
-- again (at-least-once), so the relay need not wait for the WAL flush.
DELETE FROM outbox
WHERE position = ANY(@row_positions::bigint[])
  AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL;

-- name: OutboxKeepUnconfirmed :batchexec
-- Moves the key of rows confirmed only in part to their first event not
-- confirmed: the events before it are relayed for good, the rest are sent
-- again (a later one of them may already have been confirmed: at least
-- once). Each event lies in one row only, so the new key is free.
UPDATE outbox AS o
SET position = moved.from_position
FROM (
    SELECT unnest(@row_positions::bigint[]) AS row_position, unnest(@from_positions::bigint[]) AS from_position
) AS moved
WHERE o.position = moved.row_position;

-- name: OutboxBacklog :batchone
-- How many events wait and how old the oldest row is, in seconds, at
-- @at (NULL: now, by the server's clock, which stamped the rows).
SELECT coalesce(sum(last_position - position + 1), 0)::bigint AS pending,
       coalesce(extract(epoch FROM coalesce(sqlc.narg(at)::timestamptz, clock_timestamp()) - min(created_at)), 0)::float8 AS oldest_age_seconds
FROM outbox;

-- name: OutboxOpenTransactions :batchmany
-- The other transactions of this database that have written something,
-- oldest first, at most max_count: their outbox rows, if any, are
-- invisible to the relay until they end, so the relay cannot get past
-- them.
SELECT pid::integer AS pid,
       coalesce(state, '')::text AS state,
       extract(epoch FROM clock_timestamp() - xact_start)::float8 AS age_seconds
FROM pg_catalog.pg_stat_activity
WHERE datname = current_database()
  AND backend_xid IS NOT NULL
  AND pid <> pg_backend_pid()
ORDER BY xact_start
LIMIT @max_count::integer;

-- name: OutboxVacuum :exec
-- The outbox is a queue: every row is deleted soon after it is written, so
-- dead tuples pile up far faster than autovacuum's default pace, and every
-- relay query would wade through them. The relay vacuums it itself after
-- each VacuumAfter deleted rows (SKIP_LOCKED: never wait for another).
VACUUM (SKIP_LOCKED) outbox;

-- name: OutboxHead :one
-- What the api's backpressure gate reads, with bounded work however large
-- the backlog: the oldest row (it moves when a relay deletes it) and the
-- events waiting in the first max_rows rows.
SELECT coalesce((SELECT min(position) FROM outbox), 0)::bigint AS oldest,
       (SELECT coalesce(sum(o.last_position - o.position + 1), 0)
        FROM (SELECT position, last_position FROM outbox LIMIT @max_rows::integer) AS o)::bigint AS pending;
