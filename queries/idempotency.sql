-- name: IdempotencyLock :exec
-- Serialises the requests of one user that carry one key, for the rest of
-- the transaction: a concurrent retry waits here, then finds the stored
-- answer instead of running the command again.
-- lock_name is the user id and the key, joined.
SELECT pg_advisory_xact_lock(hashtextextended(@lock_name::text, 0));

-- name: IdempotencyGet :one
-- A key older than 24 h is treated as absent.
SELECT request_hash, status, headers, body
FROM idempotency_keys
WHERE user_id = @user_id AND key = @key AND created_at > now() - interval '24 hours';

-- name: IdempotencyStore :execrows
-- Stores the first successful answer to a key. An expired row of the same
-- key is replaced; a live one is kept (0 rows: another request stored it
-- first).
INSERT INTO idempotency_keys (user_id, key, request_hash, status, headers, body)
VALUES (@user_id, @key, @request_hash, @status, @headers, @body)
ON CONFLICT (user_id, key) DO UPDATE
SET request_hash = excluded.request_hash,
    status = excluded.status,
    headers = excluded.headers,
    body = excluded.body,
    created_at = now()
WHERE idempotency_keys.created_at <= now() - interval '24 hours';

-- name: IdempotencyDeleteExpired :execrows
-- Drops up to max_count keys past their 24 h, oldest first, so the table
-- holds about one day of keys.
DELETE FROM idempotency_keys
WHERE (user_id, key) IN (
    SELECT user_id, key FROM idempotency_keys
    WHERE created_at <= now() - interval '24 hours'
    ORDER BY created_at
    LIMIT @max_count::integer
);
