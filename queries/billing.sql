-- name: BillingFileApply :batchexec
-- Applies a batch of file events, merged to one entry per file (file_ids
-- unique, sorted so concurrent consumers lock rows in the same order).
-- The upload brings size_bytes and uploaded_at, the delete deleted_at; each
-- is set by whichever event brings it (the earliest time if ever two did)
-- and never unset, so order and duplicates do not change the row.
INSERT INTO billing_files (file_id, owner_id, size_bytes, uploaded_at, deleted_at, position)
SELECT
    e.file_id, e.owner_id,
    CASE WHEN e.has_upload THEN e.size_bytes END,
    CASE WHEN e.has_upload THEN e.uploaded_at END,
    CASE WHEN e.has_delete THEN e.deleted_at END,
    e.position
FROM (
    SELECT
        unnest(@file_ids::uuid[])            AS file_id,
        unnest(@owner_ids::uuid[])           AS owner_id,
        unnest(@has_upload::boolean[])       AS has_upload,
        unnest(@sizes::bigint[])             AS size_bytes,
        unnest(@uploaded_ats::timestamptz[]) AS uploaded_at,
        unnest(@has_delete::boolean[])       AS has_delete,
        unnest(@deleted_ats::timestamptz[])  AS deleted_at,
        unnest(@positions::bigint[])         AS position
) AS e
ON CONFLICT (file_id) DO UPDATE SET
    size_bytes  = coalesce(billing_files.size_bytes, excluded.size_bytes),
    uploaded_at = least(billing_files.uploaded_at, excluded.uploaded_at),
    deleted_at  = least(billing_files.deleted_at, excluded.deleted_at),
    position    = greatest(billing_files.position, excluded.position);

-- name: BillingUsage :one
-- byte_seconds = sum over the owner's uploaded files of size_bytes times the
-- seconds of [uploaded_at, coalesce(deleted_at, now)) ∩ [period_start,
-- period_end). extract(epoch ...) is numeric (exact to the microsecond) since
-- PostgreSQL 14, so the sum is exact; trim_scale drops trailing zeros.
SELECT
    coalesce(trim_scale(sum(
        size_bytes::numeric * (
            extract(epoch FROM least(coalesce(deleted_at, @now::timestamptz), @period_end::timestamptz))
            - extract(epoch FROM greatest(uploaded_at, @period_start::timestamptz))
        )
    ) FILTER (WHERE size_bytes IS NOT NULL
        AND least(coalesce(deleted_at, @now::timestamptz), @period_end::timestamptz) > greatest(uploaded_at, @period_start::timestamptz))
    ), 0)::numeric::text AS byte_seconds,
    coalesce(max(position), 0)::bigint AS position
FROM billing_files
WHERE owner_id = @owner_id;
