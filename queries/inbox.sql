-- name: InboxClaim :many
-- Records events as handled by a subscriber and returns the ids that were
-- new: the ones it must apply now. Ids already present were applied before;
-- so were positions at or below the subscriber's watermark, whose inbox rows
-- may be pruned. The watermark row is read FOR SHARE: a watermark that moves
-- (InboxWatermarkAdopt updates the row) waits for the claims that read the
-- old one, and later claims read the new one, so rows are only ever pruned
-- (InboxPrune, after the move) below what every claim treats as applied.
INSERT INTO inbox (subscriber, event_id, position)
SELECT @subscriber::text, c.event_id, c.position
FROM (SELECT unnest(@event_ids::uuid[]) AS event_id, unnest(@positions::bigint[]) AS position) c
WHERE c.position > coalesce(
    (SELECT w.applied_through FROM inbox_watermarks w WHERE w.subscriber = @subscriber::text FOR SHARE), 0)
ON CONFLICT (subscriber, event_id) DO NOTHING
RETURNING event_id;

-- name: InboxWatermarkPropose :one
-- Proposes a new watermark for a subscriber: the position just below the
-- lowest event of its types above the current watermark that it has not
-- applied (or the head, when it applied them all), looking at most span
-- positions ahead so one sweep reads a bounded range. Saved with the
-- snapshot's xmax: a transaction still running now may hold a lower
-- position, so the proposal waits for all of them to end (Adopt). Events
-- take their transaction id before their position (EventAppend), which is
-- what makes the xmax a bound for every position handed out so far.
INSERT INTO inbox_watermarks AS w (subscriber, candidate, candidate_xmax)
SELECT @subscriber::text, p.candidate, pg_snapshot_xmax(pg_current_snapshot())
FROM (
    SELECT coalesce(
        (SELECT min(e.position) - 1
         FROM events e
         WHERE e.position > b.applied_through AND e.position <= b.upper
           AND e.type = ANY(@types::text[])
           AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.subscriber = @subscriber::text AND i.event_id = e.id)),
        b.upper) AS candidate
    FROM (
        SELECT cur.applied_through,
               least((SELECT coalesce(max(position), 0) FROM events), cur.applied_through + @span::bigint) AS upper
        FROM (SELECT coalesce((SELECT applied_through FROM inbox_watermarks WHERE subscriber = @subscriber::text), 0) AS applied_through) cur
    ) b
) p
ON CONFLICT (subscriber) DO UPDATE
SET candidate = excluded.candidate, candidate_xmax = excluded.candidate_xmax
RETURNING w.applied_through, w.candidate::bigint AS candidate;

-- name: InboxWatermarkAdopt :one
-- Moves the watermark to its proposal once that is safe: every transaction
-- that was running when it was proposed has ended (so no event at or below
-- it can still commit), and the subscriber has applied every event of its
-- types up to it. Returns the watermark, moved or not.
UPDATE inbox_watermarks w
SET applied_through = CASE
        WHEN w.candidate > w.applied_through
         AND pg_snapshot_xmin(pg_current_snapshot()) >= w.candidate_xmax
         AND NOT EXISTS (
             SELECT 1 FROM events e
             WHERE e.position > w.applied_through AND e.position <= w.candidate
               AND e.type = ANY(@types::text[])
               AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.subscriber = w.subscriber AND i.event_id = e.id))
        THEN w.candidate ELSE w.applied_through END,
    adopted_at = clock_timestamp()
WHERE w.subscriber = @subscriber::text
RETURNING w.applied_through;

-- name: InboxPrune :execrows
-- Deletes up to max_count of a subscriber's inbox rows at or below its
-- watermark: claims treat those positions as applied without them.
DELETE FROM inbox
WHERE ctid = ANY(ARRAY(
    SELECT i.ctid FROM inbox i
    WHERE i.subscriber = @subscriber::text AND i.position <= @applied_through::bigint
    LIMIT @max_count::int));

-- name: InboxAnnounce :batchexec
-- Announces that a subscriber committed applied events (channel
-- dispatch.AppliedChannel, the subscriber's name as payload): the api's
-- min_position waits look again on it instead of polling. Sent right after
-- the subscriber's COMMIT, as a transaction of its own, for the reasons
-- OutboxWake gives: only a hint, so it need not wait for its flush either.
SELECT pg_notify('epoch_applied', @subscriber::text)
WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL;

-- name: InboxClaimStored :many
-- Checks a batch of deliveries against the event store and claims the
-- subscriber's inbox rows for those that name a stored event of its types,
-- in one statement: row n answers the n-th delivery. found: a stored event
-- has its id at its position (by the primary key); matches: with its type,
-- stream and version too; fresh: its inbox row was claimed now; and the
-- stored event, which is what gets applied. The data is compared by the caller, on the
-- stored event this returns (InboxUnclaim takes back the claim of one that
-- differs, in the same transaction), so Postgres parses no delivered JSON.
-- Claims at or below the watermark are dropped, as in InboxClaim.
WITH delivered AS (
    SELECT unnest(@ids::uuid[]) AS id,
           unnest(@positions::bigint[]) AS position,
           unnest(@types::text[]) AS type,
           unnest(@stream_types::text[]) AS stream_type,
           unnest(@stream_ids::uuid[]) AS stream_id,
           unnest(@versions::integer[]) AS version,
           generate_series(1, cardinality(@ids::uuid[])) AS n
), checked AS (
    SELECT d.n, e.position, e.id, e.stream_type, e.stream_id, e.version, e.type, e.data, e.occurred_at,
           coalesce(e.type = d.type AND e.stream_type = d.stream_type AND e.stream_id = d.stream_id
                    AND e.version = d.version, false) AS matches
    FROM delivered d
    LEFT JOIN events e ON e.position = d.position AND e.id = d.id
), fresh AS (
    INSERT INTO inbox (subscriber, event_id, position)
    SELECT @subscriber::text, c.id, c.position
    FROM checked c
    WHERE c.matches AND c.type = ANY(@subscribed::text[])
      AND c.position > coalesce(
          (SELECT w.applied_through FROM inbox_watermarks w WHERE w.subscriber = @subscriber::text FOR SHARE), 0)
    -- In id order: concurrent batches holding the same events wait for
    -- each other at worst, never deadlock.
    ORDER BY c.id
    ON CONFLICT (subscriber, event_id) DO NOTHING
    RETURNING event_id
)
SELECT c.n::bigint AS n, (c.id IS NOT NULL)::boolean AS found, c.matches::boolean AS matches,
       coalesce(c.id IN (SELECT event_id FROM fresh), false)::boolean AS fresh,
       coalesce(c.position, 0)::bigint AS position, c.id, coalesce(c.stream_type, '')::text AS stream_type, c.stream_id,
       coalesce(c.version, 0)::integer AS version, coalesce(c.type, '')::text AS type, c.data, c.occurred_at
FROM checked c
ORDER BY c.n;

-- name: InboxUnclaim :exec
-- Takes back claims InboxClaimStored made in this transaction for
-- deliveries whose data turned out to differ from the stored event's.
DELETE FROM inbox WHERE subscriber = @subscriber::text AND event_id = ANY(@event_ids::uuid[]);
