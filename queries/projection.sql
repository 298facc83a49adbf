-- The inline projections. The projection applies a command's events as runs
-- of consecutive events of one type, one statement per run, so a command
-- touching 1,000 files costs the same few round trips as one touching one.

-- name: ProjectionFilesUploaded :batchexec
INSERT INTO files (id, owner_id, name, size_bytes, content_type, created_at, created_position, version, position)
SELECT
    unnest(@ids::uuid[]),
    unnest(@owner_ids::uuid[]),
    unnest(@names::text[]),
    unnest(@sizes::bigint[]),
    unnest(@content_types::text[]),
    unnest(@occurred_ats::timestamptz[]),
    unnest(@positions::bigint[]),
    unnest(@versions::integer[]),
    unnest(@positions::bigint[]);

-- name: ProjectionFilesDeleted :batchexec
DELETE FROM files WHERE id = ANY(@ids::uuid[]);

-- name: ProjectionJobsCreated :batchexec
INSERT INTO jobs (id, owner_id, name, created_at, created_position, version, position)
SELECT
    unnest(@ids::uuid[]),
    unnest(@owner_ids::uuid[]),
    unnest(@names::text[]),
    unnest(@occurred_ats::timestamptz[]),
    unnest(@positions::bigint[]),
    unnest(@versions::integer[]),
    unnest(@positions::bigint[]);

-- name: ProjectionJobsDeleted :batchexec
WITH gone_files AS (
    DELETE FROM job_files WHERE job_id = ANY(@ids::uuid[])
)
DELETE FROM jobs WHERE id = ANY(@ids::uuid[]);

-- name: ProjectionJobFilesLinked :batchexec
-- Adds the links, copying each file's name and size, and moves each job's
-- counters, version and position in the same statement.
WITH ev AS (
    SELECT
        unnest(@job_ids::uuid[]) AS job_id,
        unnest(@file_ids::uuid[]) AS file_id,
        unnest(@versions::integer[]) AS version,
        unnest(@positions::bigint[]) AS position
), linked AS (
    INSERT INTO job_files (job_id, file_id, name, size_bytes, linked_position)
    SELECT ev.job_id, ev.file_id, f.name, f.size_bytes, ev.position
    FROM ev JOIN files f ON f.id = ev.file_id
    RETURNING job_id, size_bytes
), added AS (
    SELECT job_id, count(*) AS n, sum(size_bytes) AS bytes FROM linked GROUP BY job_id
), head AS (
    SELECT job_id, max(version) AS version, max(position) AS position FROM ev GROUP BY job_id
)
UPDATE jobs j
SET version = head.version,
    position = head.position,
    file_count = j.file_count + coalesce(added.n, 0),
    total_bytes = j.total_bytes + coalesce(added.bytes, 0)
FROM head LEFT JOIN added ON added.job_id = head.job_id
WHERE j.id = head.job_id;

-- name: ProjectionJobFilesUnlinked :batchexec
WITH ev AS (
    SELECT
        unnest(@job_ids::uuid[]) AS job_id,
        unnest(@file_ids::uuid[]) AS file_id,
        unnest(@versions::integer[]) AS version,
        unnest(@positions::bigint[]) AS position
), unlinked AS (
    DELETE FROM job_files jf
    USING ev
    WHERE jf.job_id = ev.job_id AND jf.file_id = ev.file_id
    RETURNING jf.job_id, jf.size_bytes
), removed AS (
    SELECT job_id, count(*) AS n, sum(size_bytes) AS bytes FROM unlinked GROUP BY job_id
), head AS (
    SELECT job_id, max(version) AS version, max(position) AS position FROM ev GROUP BY job_id
)
UPDATE jobs j
SET version = head.version,
    position = head.position,
    file_count = j.file_count - coalesce(removed.n, 0),
    total_bytes = j.total_bytes - coalesce(removed.bytes, 0)
FROM head LEFT JOIN removed ON removed.job_id = head.job_id
WHERE j.id = head.job_id;

-- name: ProjectionTruncate :exec
TRUNCATE files, jobs, job_files;
