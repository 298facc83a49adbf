-- name: BillingStatementList :batchmany
-- An owner's closed statements starting before a period, newest first
-- (billing_statements_owner_period_key).
SELECT id, owner_id, period_start, period_end, byte_seconds::text AS byte_seconds, gb_hours, currency,
       price_version, lines, amount, amount_due, amount_units::text AS amount_units, cum_amount::text AS cum_amount,
       covered_position, events_sha256, closed_at, position
FROM billing_statements
WHERE owner_id = @owner_id AND period_start < @before
ORDER BY period_start DESC
LIMIT @max_count;

-- name: BillingStatementGet :batchone
SELECT id, owner_id, period_start, period_end, byte_seconds::text AS byte_seconds, gb_hours, currency,
       price_version, lines, amount, amount_due, amount_units::text AS amount_units, cum_amount::text AS cum_amount,
       covered_position, events_sha256, closed_at, position
FROM billing_statements WHERE id = @id AND owner_id = @owner_id;

-- name: BillingStatementsEnding :many
-- The closed statements whose periods end in [from, to), by owner and
-- period, each with its statement.closed event's position and time (the
-- stream's one event, by events_stream_version_key; null when there is
-- none): what a verification recomputes, a page at a time.
SELECT s.id, s.owner_id, s.period_start, s.period_end, s.byte_seconds::text AS byte_seconds, s.gb_hours, s.currency,
       s.price_version, s.lines, s.amount, s.amount_due, s.amount_units::text AS amount_units, s.cum_amount::text AS cum_amount,
       s.covered_position, s.events_sha256, s.closed_at, s.position,
       e.position AS event_position, e.occurred_at AS event_occurred_at
FROM billing_statements AS s
LEFT JOIN events AS e ON e.stream_id = s.id AND e.version = 1
WHERE s.period_end >= @period_from AND s.period_end < @period_to
  AND (s.owner_id, s.period_start) > (@after_owner::uuid, @after_start::timestamptz)
ORDER BY s.owner_id, s.period_start
LIMIT @max_count;

-- name: BillingClock :one
-- The database's clock: events occur by it, so periods end by it.
SELECT clock_timestamp()::timestamptz AS now;

-- name: BillingCloserLock :one
-- One closer at a time, whatever the number of billing workers: held by
-- the closer's session for one look, let go by BillingCloserUnlock (or by
-- the session's end, should its process die).
SELECT pg_try_advisory_lock(@lock_key::bigint) AS locked;

-- name: BillingCloserUnlock :exec
SELECT pg_advisory_unlock(@lock_key::bigint);

-- name: BillingFenceTake :exec
-- Takes the fence of a period's end, at a moment the caller saw the
-- database's clock past it: the transaction's own id, which is above the id
-- of every transaction that had one by then, so of every transaction that
-- could write an event occurring before the end (an event's occurred_at is
-- taken after its transaction has an id; EventAppend). The transaction must
-- commit for the fence to pass (BillingFenceCheck).
INSERT INTO billing_fences (period_end, fence_xid)
VALUES (@period_end, pg_current_xact_id())
ON CONFLICT (period_end) DO NOTHING;

-- name: BillingFenceCheck :one
-- Whether a period's fence has passed: no transaction of this database
-- with an id below the fence's is running (they are all in this
-- statement's snapshot, since the fence's own transaction committed before
-- it; a transaction of another database, as pg_stat_activity shows it,
-- writes no event here). When it passes, passed_position is the highest
-- position committed then: every event that occurred before the end is at
-- or below it. Returns the passed position, or -1 while it has not.
WITH fence AS (
    SELECT f.period_end, f.fence_xid, f.passed_position FROM billing_fences AS f WHERE f.period_end = @period_end
), passed AS (
    UPDATE billing_fences AS f
    SET passed_position = (SELECT coalesce(max(e.position), 0) FROM events AS e),
        passed_at = clock_timestamp()
    FROM fence
    WHERE f.period_end = fence.period_end AND fence.passed_position IS NULL
      AND NOT EXISTS (
          SELECT 1
          FROM pg_snapshot_xip(pg_current_snapshot()) AS r(xid)
          WHERE r.xid < fence.fence_xid
            AND NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_stat_activity AS a
                WHERE a.backend_xid = r.xid::xid
                  AND a.datid <> (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())))
    RETURNING f.passed_position
)
SELECT coalesce((SELECT passed.passed_position FROM passed), (SELECT fence.passed_position FROM fence), -1)::bigint AS passed_position;

-- name: BillingFencesPrune :exec
-- Fences of ends before the newest passed one are no longer looked at.
DELETE FROM billing_fences
WHERE period_end < (SELECT max(f.period_end) FROM billing_fences AS f WHERE f.passed_position IS NOT NULL);

-- name: BillingProgressAdvance :one
-- Moves billing's complete_through as far as it can, and proposes the next
-- candidate. A candidate (the highest position committed when it was
-- proposed) is taken once no transaction of this database with an id below
-- the proposal's is running (as BillingFenceCheck): then every position up
-- to it is settled. complete_through moves up to just below the first event
-- of billing's types in between that billing has not applied (no inbox row,
-- above the inbox watermark) and whose application has not failed; the
-- failed ones below that become gaps, which hold their owners' statements.
-- A new candidate is proposed once the last one was taken (or there is
-- none), with this transaction's id. Returns complete_through.
WITH p AS (
    SELECT b.complete_through, b.candidate, b.candidate_xid
    FROM billing_progress AS b
    WHERE b.id = 1
    FOR UPDATE
), mark AS (
    SELECT coalesce((SELECT w.applied_through FROM inbox_watermarks AS w WHERE w.subscriber = @subscriber::text), 0) AS applied_through
), settled AS (
    SELECT p.complete_through, p.candidate,
           (p.candidate IS NOT NULL AND NOT EXISTS (
               SELECT 1
               FROM pg_snapshot_xip(pg_current_snapshot()) AS r(xid)
               WHERE r.xid < p.candidate_xid
                 AND NOT EXISTS (
                     SELECT 1 FROM pg_catalog.pg_stat_activity AS a
                     WHERE a.backend_xid = r.xid::xid
                       AND a.datid <> (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())))) AS passed
    FROM p
), missing AS (
    -- The first such event, by events_pkey in order: the scan stops
    -- there, however far billing is behind.
    SELECT e.position
    FROM settled AS s, mark AS m,
         LATERAL (
             SELECT ev.position
             FROM events AS ev
             WHERE ev.position > greatest(s.complete_through, m.applied_through) AND ev.position <= s.candidate
               AND ev.type = ANY(@types::text[])
               -- OFFSET 0 keeps each NOT EXISTS a probe of its key per
               -- event, never an anti join that compares every event with
               -- every inbox row (a young table's statistics choose it).
               AND NOT EXISTS (SELECT 1 FROM inbox AS i WHERE i.subscriber = @subscriber::text AND i.event_id = ev.id OFFSET 0)
               AND NOT EXISTS (SELECT 1 FROM dead_letters AS d
                               WHERE d.subscriber = @subscriber::text AND d.event_id = ev.id::text AND d.reason = 'failed'
                               OFFSET 0)
             ORDER BY ev.position
             LIMIT 1
         ) AS e
    WHERE s.passed
), target AS (
    SELECT CASE WHEN s.passed THEN coalesce((SELECT ms.position - 1 FROM missing AS ms), s.candidate)
                ELSE s.complete_through END AS complete_through
    FROM settled AS s
), gaps AS (
    INSERT INTO billing_gaps (position, event_id, owner_id, occurred_at)
    SELECT e.position, e.id, (e.data->>'owner_id')::uuid, e.occurred_at
    FROM events AS e, settled AS s, target AS t, mark AS m
    WHERE e.position > s.complete_through AND e.position <= t.complete_through
      AND e.type = ANY(@types::text[])
      AND e.position > m.applied_through
      AND NOT EXISTS (SELECT 1 FROM inbox AS i WHERE i.subscriber = @subscriber::text AND i.event_id = e.id OFFSET 0)
    ON CONFLICT (position) DO NOTHING
)
UPDATE billing_progress AS b
SET complete_through = t.complete_through,
    candidate = CASE WHEN s.passed OR s.candidate IS NULL
                     THEN (SELECT coalesce(max(e.position), 0) FROM events AS e) ELSE b.candidate END,
    candidate_xid = CASE WHEN s.passed OR s.candidate IS NULL THEN pg_current_xact_id() ELSE b.candidate_xid END
FROM settled AS s, target AS t
WHERE b.id = 1
RETURNING b.complete_through;

-- name: BillingGapsClear :exec
-- Gaps billing has since applied (a replayed dead letter, a redrive) hold
-- nothing any more.
DELETE FROM billing_gaps AS g
WHERE EXISTS (SELECT 1 FROM inbox AS i WHERE i.subscriber = @subscriber::text AND i.event_id = g.event_id)
   OR g.position <= coalesce((SELECT w.applied_through FROM inbox_watermarks AS w WHERE w.subscriber = @subscriber::text), 0);

-- name: BillingGaps :many
SELECT owner_id, min(occurred_at)::timestamptz AS occurred_at FROM billing_gaps GROUP BY owner_id;

-- name: BillingCloseDue :many
-- Owners with a statement to close for a period ending at or before
-- period_end (which starts at last_start): never closed and first uploaded
-- before it, or closed up to a period starting at or before last_start. By
-- owner, in (after_owner, last_owner], a page at a time: the owners' key
-- read in order and each one's closer state looked up by its key, so a
-- page costs its own rows, not a join of every owner.
SELECT o.owner_id, o.first_upload_at::timestamptz AS first_upload_at, o.position,
       (c.next_period_start IS NOT NULL)::boolean AS closed_before,
       coalesce(c.next_period_start, '0001-01-01 00:00:00+00')::timestamptz AS next_period_start,
       coalesce(c.cum_amount, 0)::text AS cum_amount,
       coalesce(c.hash_state, '')::bytea AS hash_state, coalesce(c.hash_through, 0)::bigint AS hash_through,
       coalesce(c.hash_covered, 0)::bigint AS hash_covered
FROM billing_owners AS o
LEFT JOIN LATERAL (
    SELECT bc.next_period_start, bc.cum_amount, bc.hash_state, bc.hash_through, bc.hash_covered
    FROM billing_close AS bc
    WHERE bc.owner_id = o.owner_id
) AS c ON true
WHERE o.owner_id > @after_owner AND o.owner_id <= @last_owner
  AND o.first_upload_at IS NOT NULL
  AND ((c.next_period_start IS NULL AND o.first_upload_at < @period_end::timestamptz) OR c.next_period_start <= @last_start::timestamptz)
ORDER BY o.owner_id
LIMIT @max_count;

-- name: BillingCloseBalances :many
-- For each owner (row n answers the n-th), the byte-seconds of its ledger
-- up to its period's start and end: two lookups of billing_levels_pkey,
-- plus its changes not folded into the ledger yet (billing_pending).
SELECT q.n::bigint AS n,
       (coalesce((SELECT l.byte_seconds + l.level * (extract(epoch FROM q.period_start) - extract(epoch FROM l.at))
                  FROM billing_levels AS l
                  WHERE l.owner_id = q.owner_id AND l.at <= q.period_start
                  ORDER BY l.at DESC LIMIT 1), 0)
        + coalesce((SELECT sum(p.delta * (extract(epoch FROM q.period_start) - extract(epoch FROM p.at)))
                    FROM billing_pending AS p
                    WHERE p.owner_id = q.owner_id AND p.at < q.period_start), 0))::text AS at_start,
       (coalesce((SELECT l.byte_seconds + l.level * (extract(epoch FROM q.period_end) - extract(epoch FROM l.at))
                  FROM billing_levels AS l
                  WHERE l.owner_id = q.owner_id AND l.at <= q.period_end
                  ORDER BY l.at DESC LIMIT 1), 0)
        + coalesce((SELECT sum(p.delta * (extract(epoch FROM q.period_end) - extract(epoch FROM p.at)))
                    FROM billing_pending AS p
                    WHERE p.owner_id = q.owner_id AND p.at < q.period_end), 0))::text AS at_end
FROM (
    SELECT unnest(@owner_ids::uuid[]) AS owner_id,
           unnest(@period_starts::timestamptz[]) AS period_start,
           unnest(@period_ends::timestamptz[]) AS period_end,
           generate_series(1, cardinality(@owner_ids::uuid[])) AS n
) AS q
ORDER BY q.n;

-- name: BillingCloseEvents :many
-- Each owner's file events above its hash_through, in position order
-- (events_file_owner_idx): what a close hashes beyond the state it kept.
SELECT q.owner_id::uuid AS owner_id, e.position, e.id, e.occurred_at
FROM (
    SELECT unnest(@owner_ids::uuid[]) AS owner_id, unnest(@after_positions::bigint[]) AS after_position
) AS q
CROSS JOIN LATERAL (
    SELECT ev.position, ev.id, ev.occurred_at
    FROM events AS ev
    WHERE ev.stream_type = 'file' AND ev.data->>'owner_id' = q.owner_id::text AND ev.position > q.after_position
    ORDER BY ev.position
    -- Kept a lookup per owner: flattened into a join, a plan for thousands
    -- of owners reads every file event to hash them.
    OFFSET 0
) AS e
ORDER BY q.owner_id, e.position;

-- name: BillingStatementsCopy :copyfrom
-- A close's statements, by COPY: thousands at a time.
INSERT INTO billing_statements (id, owner_id, period_start, period_end, byte_seconds, gb_hours, currency,
    price_version, lines, amount, amount_due, amount_units, cum_amount, covered_position, events_sha256, closed_at, position)
VALUES (@id, @owner_id, @period_start, @period_end, @byte_seconds, @gb_hours, @currency,
    @price_version, @lines, @amount, @amount_due, @amount_units, @cum_amount, @covered_position, @events_sha256, @closed_at, @position);

-- name: BillingCloseSave :batchexec
INSERT INTO billing_close (owner_id, next_period_start, cum_amount, hash_state, hash_through, hash_covered)
SELECT unnest(@owner_ids::uuid[]), unnest(@next_period_starts::timestamptz[]), unnest(@cum_amount::text[])::numeric,
       unnest(@hash_states::bytea[]), unnest(@hash_throughs::bigint[]), unnest(@hash_covereds::bigint[])
ON CONFLICT (owner_id) DO UPDATE SET
    next_period_start = excluded.next_period_start,
    cum_amount         = excluded.cum_amount,
    hash_state        = excluded.hash_state,
    hash_through      = excluded.hash_through,
    hash_covered      = excluded.hash_covered;

-- name: BillingOwnerFileEvents :many
-- Every file event of one owner, in position order (events_file_owner_idx):
-- what a verification recomputes the owner's statements from.
SELECT position, id, stream_id, type, data, occurred_at
FROM events
WHERE stream_type = 'file' AND data->>'owner_id' = (@owner_id::uuid)::text
ORDER BY position;

-- name: BillingPreferIndexes :batchexec
-- Keeps the closer's statements off sequential scans for the rest of their
-- transaction: their bounds come from billing_progress and the fences, so
-- a generic plan cannot tell a range of a few positions from a third of
-- events, and a scan of all of events four times a second is what a
-- worker draining a backlog would pay. JIT goes off with them: a plan
-- costed with sequential scans disabled looks expensive enough to compile,
-- and compiling a plan of a few index lookups took half a second.
SELECT set_config('enable_seqscan', @enable_seqscan::text, true), set_config('jit', 'off', true);
