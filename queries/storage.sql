-- name: StorageFileApply :batchexec
-- Applies a batch of file events, merged to one entry per file (file_ids
-- unique, sorted so concurrent consumers lock rows in the same order).
-- has_upload/size come from file.uploaded, deleted from file.deleted. Each
-- column is set by whichever event brings it and never unset, so the result
-- does not depend on the order or repetition of deliveries.
INSERT INTO storage_files (file_id, owner_id, size_bytes, deleted, position)
SELECT e.file_id, e.owner_id, CASE WHEN e.has_upload THEN e.size_bytes END, e.deleted, e.position
FROM (
    SELECT
        unnest(@file_ids::uuid[])     AS file_id,
        unnest(@owner_ids::uuid[])    AS owner_id,
        unnest(@has_upload::boolean[]) AS has_upload,
        unnest(@sizes::bigint[])      AS size_bytes,
        unnest(@deleted::boolean[])   AS deleted,
        unnest(@positions::bigint[])  AS position
) AS e
ON CONFLICT (file_id) DO UPDATE SET
    size_bytes = coalesce(storage_files.size_bytes, excluded.size_bytes),
    deleted    = storage_files.deleted OR excluded.deleted,
    position   = greatest(storage_files.position, excluded.position);

-- name: StorageUsage :one
-- What an owner stores now: files whose upload was applied and whose delete
-- was not. bytes is numeric (a sum of bigints may pass int64), as text.
SELECT
    count(*) FILTER (WHERE size_bytes IS NOT NULL AND NOT deleted)::bigint AS file_count,
    coalesce(sum(size_bytes) FILTER (WHERE NOT deleted), 0)::numeric::text AS bytes,
    coalesce(max(position), 0)::bigint AS position
FROM storage_files
WHERE owner_id = @owner_id;
