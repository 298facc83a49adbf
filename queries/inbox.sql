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

-- name: InboxAnnounce :exec
-- Announces that a subscriber committed applied events (channel
-- dispatch.AppliedChannel, the subscriber's name as payload): the api's
-- min_position waits look again on it instead of polling. Sent right after
-- the subscriber's COMMIT, as a transaction of its own, for the reasons
-- OutboxWake gives: only a hint, so it need not wait for its flush either.
SELECT pg_notify('epoch_applied', @subscriber::text)
WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL;
