-- name: EventAppend :many
-- Appends a command's events in one round trip. The zipped unnests yield
-- rows in array order and identity values are drawn in that order, so
-- positions grow in version order within a stream. A (stream_id, version)
-- that exists already fails with 23505: the expected-version check.
-- The one-time filter gives the transaction its id before the first
-- position is drawn, so a snapshot's xmax bounds every position handed out
-- before it (inbox watermarks rely on it; see InboxWatermarkPropose).
-- An event's occurred_at is the database's clock, read once for the
-- statement after that filter (an init plan, run at the first row), so
-- every process's events occur by one clock, and an event occurring before
-- a moment belongs to a transaction that had its id before that moment
-- (the billing closer's fences rely on it). An event given a time keeps
-- it (a zero time.Time, 0001-01-01, asks for the clock): tests write
-- histories of their own that way; commands never do.
INSERT INTO events (id, stream_type, stream_id, version, type, data, occurred_at)
SELECT e.id, e.stream_type, e.stream_id, e.version, e.type, e.data,
       CASE WHEN e.occurred_at = '0001-01-01 00:00:00+00' THEN (SELECT clock_timestamp()) ELSE e.occurred_at END
FROM (
    SELECT
        unnest(@ids::uuid[]) AS id,
        unnest(@stream_types::text[]) AS stream_type,
        unnest(@stream_ids::uuid[]) AS stream_id,
        unnest(@versions::integer[]) AS version,
        unnest(@types::text[]) AS type,
        unnest(@datas::jsonb[]) AS data,
        unnest(@occurred_ats::timestamptz[]) AS occurred_at
    WHERE pg_current_xact_id() IS NOT NULL
) AS e
RETURNING id, position, occurred_at;

-- name: EventListAfter :many
SELECT position, id, stream_type, stream_id, version, type, data, occurred_at
FROM events
WHERE position > @after
ORDER BY position
LIMIT @max_count;

-- name: EventMaxPosition :one
SELECT coalesce(max(position), 0)::bigint FROM events;

-- name: EventStreamVersion :one
-- A stream's current version (0 for none), by events_stream_version_key.
SELECT coalesce(max(version), 0)::integer FROM events WHERE stream_id = @stream_id;

-- name: EventTakeXid :batchexec
-- Gives the transaction its id before a COPY into events draws positions
-- (see EventAppend's one-time filter, which does the same in an insert).
-- sqlc takes no batch query without a parameter: take is true.
SELECT pg_current_xact_id() WHERE @take::boolean;

-- name: EventPositionsDraw :many
-- Draws count positions from events' own sequence, in order, for events a
-- COPY writes next with them (after EventTakeXid, as the column's default
-- would draw them during the COPY): no lookup of the rows afterwards.
-- The sequence is looked up once (a subquery kept apart by OFFSET 0), not
-- by its name for every row.
SELECT nextval(s.seq)::bigint AS position
FROM (SELECT pg_get_serial_sequence('events', 'position')::regclass AS seq OFFSET 0) AS s,
     generate_series(1, @count::int) AS g(n)
ORDER BY 1;
