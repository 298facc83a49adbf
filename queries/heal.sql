-- name: HealScan :one
-- One pass of healing for a subscriber, in one statement: the lowest
-- positions above its cursor (or its inbox watermark, when that is higher),
-- at or below what is due and at most @span positions above that floor,
-- of stored events of its types it has not applied, leaving out those whose
-- own application failed (a dead letter with reason failed: they wait for
-- the operator; a forged or altered copy's dead letter, reason
-- unknown_event or mismatch, leaves the real event to heal); the highest
-- committed position; and the snapshot's xmin (of this database's
-- transactions) and xmax, which tell later passes when every position up
-- to that head has committed or rolled back (events take their
-- transaction id before their position, EventAppend).
-- With nothing missing it reads the events from the cursor to what is due
-- by the primary key, each with a probe of the inbox key, and nothing
-- else; with nothing due (@due at or below the floor) it reads no event.
SELECT f.floor::bigint AS floor,
       (SELECT coalesce(max(position), 0) FROM events)::bigint AS head,
       -- The oldest transaction running at this snapshot that may be of
       -- this database: those another database's activity names are left
       -- out, so a long transaction elsewhere on the server does not hold
       -- healing back; one that ended before the activity was read counts.
       coalesce((SELECT min(x::text::bigint)
                 FROM pg_snapshot_xip(pg_current_snapshot()) AS x
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                                   WHERE a.backend_xid = (x::text::bigint % 4294967296)::text::xid
                                     AND a.datname IS DISTINCT FROM current_database())),
                pg_snapshot_xmax(pg_current_snapshot())::text::bigint)::bigint AS snapshot_xmin,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS snapshot_xmax,
       ARRAY(
           SELECT e.position
           FROM events e
           WHERE e.position > f.floor
             AND e.position <= least(@due::bigint, f.floor + @span::bigint)
             AND e.type = ANY(@types::text[])
             -- OFFSET 0 keeps each probe one lookup of its key per event:
             -- planned as an anti join on a young table's statistics, it
             -- compared every event with every inbox row. The inbox is
             -- probed by position (its rows hold the stored event's
             -- position with its id, InboxClaimStored): consecutive events
             -- probe neighbouring keys, where random ids would each probe
             -- a page of their own. CASE keeps that probe first (the planner
             -- orders plain conditions by cost, and the small dead-letter
             -- table's looks cheaper): an applied event, nearly every one,
             -- costs one lookup.
             AND CASE WHEN EXISTS (SELECT 1 FROM inbox i WHERE i.subscriber = @subscriber::text AND i.position = e.position OFFSET 0)
                      THEN false
                      ELSE NOT EXISTS (SELECT 1 FROM dead_letters d
                                       WHERE d.subscriber = @subscriber::text AND d.event_id = e.id::text AND d.reason = 'failed'
                                       OFFSET 0)
                 END
           ORDER BY e.position
           LIMIT @max_count::int
       )::bigint[] AS missing
FROM (SELECT greatest(@after::bigint,
        coalesce((SELECT w.applied_through FROM inbox_watermarks w WHERE w.subscriber = @subscriber::text), 0)) AS floor) f;

-- name: HealEvents :many
-- The stored events at these positions, in position order: what healing
-- hands over, as stored.
SELECT position, id, stream_type, stream_id, version, type, data, occurred_at
FROM events
WHERE position = ANY(@positions::bigint[])
ORDER BY position;

-- name: HealCount :batchexec
-- Adds what a heal applied to the subscriber's count, in the transaction
-- that applied it.
INSERT INTO heals AS h (subscriber, healed, last_position)
VALUES (@subscriber::text, @healed::bigint, @last_position::bigint)
ON CONFLICT (subscriber) DO UPDATE
SET healed = h.healed + excluded.healed,
    last_position = greatest(h.last_position, excluded.last_position),
    last_healed_at = clock_timestamp();
