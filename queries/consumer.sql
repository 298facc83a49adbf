-- name: InboxFileEventMissing :one
-- The lowest position in [from_position, max_position] of an owner's
-- committed file event that the subscriber has not applied yet, or 0 when
-- it applied them all. Served by events_file_owner_idx and the inbox key.
-- Positions at or below the subscriber's watermark are applied (their
-- inbox rows may be pruned).
SELECT coalesce(min(e.position), 0)::bigint AS position
FROM events e
WHERE e.stream_type = 'file'
  AND e.data->>'owner_id' = @owner_id::text
  AND e.position BETWEEN greatest(@from_position::bigint,
        coalesce((SELECT w.applied_through + 1 FROM inbox_watermarks w WHERE w.subscriber = @subscriber::text), 0))
      AND @max_position::bigint
  AND NOT EXISTS (
      SELECT 1 FROM inbox i WHERE i.subscriber = @subscriber::text AND i.event_id = e.id
  );

-- name: InboxFileEventMissingMany :many
-- InboxFileEventMissing for many waits at once, in one statement: row n
-- answers the n-th (owner_id, from_position, max_position).
SELECT w.n::bigint AS n, coalesce((
    SELECT min(e.position)
    FROM events e
    WHERE e.stream_type = 'file'
      AND e.data->>'owner_id' = w.owner_id
      AND e.position BETWEEN greatest(w.from_position, m.applied_through + 1) AND w.max_position
      AND NOT EXISTS (
          SELECT 1 FROM inbox i WHERE i.subscriber = @subscriber::text AND i.event_id = e.id
      )), 0)::bigint AS position
FROM (
    SELECT unnest(@owner_ids::text[]) AS owner_id,
           unnest(@from_positions::bigint[]) AS from_position,
           unnest(@max_positions::bigint[]) AS max_position,
           generate_series(1, cardinality(@owner_ids::text[])) AS n
) w
CROSS JOIN (SELECT coalesce((SELECT applied_through FROM inbox_watermarks WHERE subscriber = @subscriber::text), 0) AS applied_through) m;
