-- name: JobGet :one
SELECT id, owner_id, name, created_at, created_position, version, position, file_count, total_bytes::text AS total_bytes
FROM jobs
WHERE id = @id AND owner_id = @owner_id;

-- name: JobLockForUpdate :one
-- Serialises the commands on one job: the second waits for the first to
-- commit, then reads its version. Before the row it takes the owner's file
-- lock shared (the InitPlan runs before the row is locked, so the order is
-- always owner lock, then job): files are only ever deleted under that lock
-- held exclusive (FileLockForUpdate), so no file the command reads can be
-- deleted before it commits. One lock per command, not one per file.
SELECT id, owner_id, name, created_at, created_position, version, position, file_count, total_bytes::text AS total_bytes
FROM jobs
WHERE id = @id AND owner_id = @owner_id
  AND (SELECT pg_advisory_xact_lock_shared(x'0e0c0b02'::integer, hashtext(@owner_id::text)) IS NOT NULL)
FOR UPDATE;

-- name: JobLockManyForUpdate :many
-- Locks several jobs in id order (the order every command takes them in).
SELECT id, version
FROM jobs
WHERE id = ANY(@ids::uuid[])
ORDER BY id
FOR UPDATE;

-- name: JobList :many
SELECT id, owner_id, name, created_at, created_position, version, position, file_count, total_bytes::text AS total_bytes
FROM jobs
WHERE owner_id = @owner_id AND created_position < @before
ORDER BY created_position DESC
LIMIT @max_count;

-- name: JobFileList :many
SELECT file_id, name, size_bytes
FROM job_files
WHERE job_id = @job_id
ORDER BY linked_position;

-- name: JobFileIDsInLinkOrder :many
SELECT file_id FROM job_files WHERE job_id = @job_id ORDER BY linked_position;

-- name: JobFileLinkedIDs :many
-- Which of the given files the job has.
SELECT file_id FROM job_files WHERE job_id = @job_id AND file_id = ANY(@file_ids::uuid[]);

-- name: JobIDsWithFile :many
SELECT job_id FROM job_files WHERE file_id = @file_id ORDER BY job_id;
