-- name: EventAppend :many
-- Appends a command's events in one round trip. The zipped unnests yield
-- rows in array order and identity values are drawn in that order, so
-- positions grow in version order within a stream. A (stream_id, version)
-- that exists already fails with 23505: the expected-version check.
-- The one-time filter gives the transaction its id before the first
-- position is drawn, so a snapshot's xmax bounds every position handed out
-- before it (inbox watermarks rely on it; see InboxWatermarkPropose).
INSERT INTO events (id, stream_type, stream_id, version, type, data, occurred_at)
SELECT
    unnest(@ids::uuid[]),
    unnest(@stream_types::text[]),
    unnest(@stream_ids::uuid[]),
    unnest(@versions::integer[]),
    unnest(@types::text[]),
    unnest(@datas::jsonb[]),
    unnest(@occurred_ats::timestamptz[])
WHERE pg_current_xact_id() IS NOT NULL
RETURNING id, position;

-- name: EventListAfter :many
SELECT position, id, stream_type, stream_id, version, type, data, occurred_at
FROM events
WHERE position > @after
ORDER BY position
LIMIT @max_count;

-- name: EventMaxPosition :one
SELECT coalesce(max(position), 0)::bigint FROM events;
