-- name: DeadLetterRecord :many
-- Keeps messages a subscriber refused or could not apply, one row per
-- (subscriber, event_id): a message that dies again adds to deaths, so a
-- dead letter is listed and counted once. inserted tells the new ones. The
-- arrays must not repeat an event_id (ON CONFLICT cannot touch a row twice
-- in one statement). A position of 0 is none (NULL).
INSERT INTO dead_letters AS d (subscriber, event_id, position, reason, body)
SELECT @subscriber::text, unnest(@event_ids::text[]), nullif(unnest(@positions::bigint[]), 0),
       unnest(@reasons::text[]), unnest(@bodies::bytea[])
ON CONFLICT (subscriber, event_id) DO UPDATE
SET deaths = d.deaths + 1,
    last_dead_at = clock_timestamp(),
    reason = excluded.reason,
    position = coalesce(excluded.position, d.position),
    body = excluded.body
RETURNING d.event_id, d.reason, (d.deaths = 1)::boolean AS inserted;

-- name: DeadLetterList :many
-- A page of a subscriber's dead letters, oldest death first, after the
-- cursor (first_dead_at, event_id). What the stored event says (position,
-- type, stream) is joined from events by id and the claimed position, so
-- a dead letter that names no stored event shows none of it.
SELECT d.event_id, e.position AS stored_position, e.type, e.stream_id, d.reason, d.deaths,
       d.first_dead_at, d.last_dead_at
FROM dead_letters d
LEFT JOIN events e ON e.position = d.position AND e.id::text = d.event_id
WHERE d.subscriber = @subscriber::text
  AND (d.first_dead_at, d.event_id) > (@after_at::timestamptz, @after_id::text)
ORDER BY d.first_dead_at, d.event_id
LIMIT @max_count;

-- name: DeadLetterClaimByIDs :many
-- Locks the named dead letters of a subscriber for a replay, with the
-- stored events they match (id and position). The lock makes concurrent
-- replays of one dead letter apply it once: the second finds it deleted.
SELECT d.event_id, d.first_dead_at,
       e.position, e.id, e.stream_type, e.stream_id, e.version, e.type, e.data, e.occurred_at
FROM dead_letters d
LEFT JOIN events e ON e.position = d.position AND e.id::text = d.event_id
WHERE d.subscriber = @subscriber::text AND d.event_id = ANY(@event_ids::text[])
ORDER BY d.first_dead_at, d.event_id
FOR UPDATE OF d;

-- name: DeadLetterClaimPage :many
-- DeadLetterClaimByIDs for the next max_count dead letters of a subscriber
-- after the cursor (first_dead_at, event_id): a replay of all of them goes
-- through the list in pages, past the ones that stay.
SELECT d.event_id, d.first_dead_at,
       e.position, e.id, e.stream_type, e.stream_id, e.version, e.type, e.data, e.occurred_at
FROM dead_letters d
LEFT JOIN events e ON e.position = d.position AND e.id::text = d.event_id
WHERE d.subscriber = @subscriber::text
  AND (d.first_dead_at, d.event_id) > (@after_at::timestamptz, @after_id::text)
ORDER BY d.first_dead_at, d.event_id
LIMIT @max_count
FOR UPDATE OF d;

-- name: DeadLetterDelete :execrows
-- Removes dead letters of a subscriber: replayed or discarded.
DELETE FROM dead_letters
WHERE subscriber = @subscriber::text AND event_id = ANY(@event_ids::text[]);
