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
