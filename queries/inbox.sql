-- name: InboxClaim :many
-- Records events as handled by a subscriber and returns the ids that were
-- new: the ones it must apply now. Ids already present were applied before.
INSERT INTO inbox (subscriber, event_id, position)
SELECT @subscriber::text, unnest(@event_ids::uuid[]), unnest(@positions::bigint[])
ON CONFLICT (subscriber, event_id) DO NOTHING
RETURNING event_id;
