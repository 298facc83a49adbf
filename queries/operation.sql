-- name: OperationFailAbandoned :exec
-- Fails the running operations of a target whose runner is gone: its
-- session lock is free. The try-lock is let go at once.
UPDATE operations
SET state = 'failed', error = 'the process running it stopped', finished_at = clock_timestamp()
WHERE state = 'running' AND (@target::text = '' OR target = @target::text)
  AND pg_try_advisory_lock(lock_key)
  AND pg_advisory_unlock(lock_key);

-- name: OperationStart :one
-- Records a running operation; 23505 on operations_one_running_idx when one
-- runs for the target already.
INSERT INTO operations (id, kind, target, lock_key)
VALUES (@id, @kind, @target, @lock_key)
RETURNING *;

-- name: OperationLock :exec
-- The runner's session lock, held while it runs.
SELECT pg_advisory_lock(@lock_key::bigint);

-- name: OperationUnlock :exec
SELECT pg_advisory_unlock(@lock_key::bigint);

-- name: OperationProgress :exec
UPDATE operations SET events_applied = @events_applied, differences = @differences
WHERE id = @id AND state = 'running';

-- name: OperationFinish :exec
UPDATE operations
SET state = @state, events_applied = @events_applied, differences = @differences,
    error = nullif(@error::text, ''), finished_at = clock_timestamp()
WHERE id = @id AND state = 'running';

-- name: OperationGet :one
SELECT * FROM operations WHERE id = @id;
