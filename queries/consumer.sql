-- name: InboxFileEventMissing :one
-- The lowest position in [from_position, max_position] of an owner's
-- committed file event that the subscriber has not applied yet, or 0 when
-- it applied them all. Served by events_file_owner_idx and the inbox key.
SELECT coalesce(min(e.position), 0)::bigint AS position
FROM events e
WHERE e.stream_type = 'file'
  AND e.data->>'owner_id' = @owner_id::text
  AND e.position BETWEEN @from_position::bigint AND @max_position::bigint
  AND NOT EXISTS (
      SELECT 1 FROM inbox i WHERE i.subscriber = @subscriber::text AND i.event_id = e.id
  );
