-- name: FileGet :one
SELECT id, owner_id, name, size_bytes, content_type, created_at, created_position, version, position
FROM files
WHERE id = @id AND owner_id = @owner_id;

-- name: FileLockForUpdate :one
-- Locks a file before deleting it: a concurrent link holds it FOR SHARE, so
-- the two cannot interleave.
SELECT id, owner_id, name, size_bytes, content_type, created_at, created_position, version, position
FROM files
WHERE id = @id AND owner_id = @owner_id
FOR UPDATE;

-- name: FileLockForShare :many
-- Locks the files a link is about to attach, so none is deleted meanwhile.
SELECT id, size_bytes, position
FROM files
WHERE id = ANY(@ids::uuid[]) AND owner_id = @owner_id
ORDER BY id
FOR SHARE;

-- name: FileList :many
-- Newest first; created_position is unique and serves as the cursor.
SELECT id, owner_id, name, size_bytes, content_type, created_at, created_position, version, position
FROM files
WHERE owner_id = @owner_id AND created_position < @before
ORDER BY created_position DESC
LIMIT @max_count;
