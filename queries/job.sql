-- name: JobGet :batchone
SELECT id, owner_id, name, created_at, created_position, version, position, file_count, total_bytes::text AS total_bytes
FROM jobs
WHERE id = @id AND owner_id = @owner_id;

-- name: JobLockForUpdate :batchone
-- Serialises the commands on one job: the second waits for the first to
-- commit, then reads its version. Before the row it takes, shared, the file
-- locks of the files the command reads (command.FileLock: one of 64 per
-- file, so at most 64 however many files): a file is only ever deleted
-- under its lock held exclusive (FileLockForUpdate), so none of them can be
-- deleted before the command commits. The InitPlan runs before the row is
-- locked: the order is always file locks, then rows.
SELECT id, owner_id, name, created_at, created_position, version, position, file_count, total_bytes::text AS total_bytes
FROM jobs
WHERE id = @id AND owner_id = @owner_id
  AND (
    SELECT count(pg_advisory_xact_lock_shared(x'0e0c0b02'::integer, file_lock))
    FROM unnest(@file_locks::integer[]) AS file_lock
  ) IS NOT NULL
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

-- name: JobFileList :batchmany
-- Scoped to the owner like JobGet: another user's job costs one probe of
-- jobs' primary key, as a missing one does; with no job row to join, none
-- of its job_files rows is read.
SELECT jf.file_id, jf.name, jf.size_bytes
FROM jobs AS j
JOIN job_files AS jf ON jf.job_id = j.id
WHERE j.id = @job_id AND j.owner_id = @owner_id
ORDER BY jf.linked_position;

-- name: JobFileIDsInLinkOrder :batchmany
SELECT file_id FROM job_files WHERE job_id = @job_id ORDER BY linked_position;

-- name: JobFileLinkedIDs :batchmany
-- Which of the given files the job has.
SELECT file_id FROM job_files WHERE job_id = @job_id AND file_id = ANY(@file_ids::uuid[]);

-- name: JobIDsWithFile :batchmany
SELECT job_id FROM job_files WHERE file_id = @file_id ORDER BY job_id;
