-- name: FileGet :batchone
SELECT id, owner_id, name, size_bytes, content_type, created_at, created_position, version, position
FROM files
WHERE id = @id AND owner_id = @owner_id;

-- name: FileLockForUpdate :batchone
-- Locks a file before deleting it. First it takes the file's lock
-- (command.FileLock) exclusive; the InitPlan runs before the row is locked.
-- A job command that names the file holds that lock shared from its start,
-- so a deletion waits for the links in flight, whose rows it then sees, and
-- a link that starts meanwhile waits and then finds the file gone.
SELECT id, owner_id, name, size_bytes, content_type, created_at, created_position, version, position
FROM files
WHERE id = @id AND owner_id = @owner_id
  AND (SELECT pg_advisory_xact_lock(x'0e0c0b02'::integer, @file_lock::integer) IS NOT NULL)
FOR UPDATE;

-- name: FilesForLink :batchmany
-- The owner's files a job command is about to link or unlink. No row lock:
-- their file locks, held shared since the job was locked, keep them from
-- being deleted before the command commits.
-- The ids are joined, not filtered with = ANY: against a parameter array
-- that is a linear search per row, a million comparisons for 1,000 files.
SELECT f.id, f.size_bytes, f.position
FROM unnest(@ids::uuid[]) AS wanted(id)
JOIN files AS f ON f.id = wanted.id
WHERE f.owner_id = @owner_id;

-- name: FileList :many
-- Newest first; created_position is unique and serves as the cursor.
SELECT id, owner_id, name, size_bytes, content_type, created_at, created_position, version, position
FROM files
WHERE owner_id = @owner_id AND created_position < @before
ORDER BY created_position DESC
LIMIT @max_count;
