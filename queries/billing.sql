-- name: BillingOwnersApply :batchexec
-- The owners of a batch (owner_ids unique and sorted): their rows are
-- written in that order, so two batches that share owners wait for each
-- other, never deadlock. The first upload and the highest position only
-- ever move one way, so order and duplicates of deliveries do not change
-- the row.
INSERT INTO billing_owners (owner_id, first_upload_at, position)
SELECT o.owner_id, CASE WHEN o.has_upload THEN o.first_upload_at END, o.position
FROM (
    SELECT unnest(@owner_ids::uuid[])              AS owner_id,
           unnest(@has_upload::boolean[])          AS has_upload,
           unnest(@first_upload_ats::timestamptz[]) AS first_upload_at,
           unnest(@positions::bigint[])            AS position
) AS o
ORDER BY o.owner_id
ON CONFLICT (owner_id) DO UPDATE SET
    first_upload_at = least(billing_owners.first_upload_at, excluded.first_upload_at),
    position        = greatest(billing_owners.position, excluded.position);

-- name: BillingApply :batchexec
-- Applies a batch of file events, merged to one entry per file (file_ids
-- unique and sorted), to the file rows and to the owners' pending ledger
-- changes, in one statement. A file's row gains what an event brings (size
-- and upload time from the upload, delete time from the delete; the
-- earliest if ever two did) and never loses it, so order and duplicates do
-- not change it. A file with its size and upload time stores its bytes from
-- the upload until the delete (none when the delete is not later); the
-- ledger changes by the difference between what the file's row says after
-- and before, at the instants it names. Those changes are only appended to
-- billing_pending: folding them into the ledger (BillingFold) rewrites each
-- owner's rows from the earliest change on, and the queue hands events
-- over out of time order (the relay publishes its partitions side by
-- side), so the fold is done for many batches at once, not for each.
WITH batch AS (
    SELECT
        unnest(@file_ids::uuid[])            AS file_id,
        unnest(@owner_ids::uuid[])           AS owner_id,
        unnest(@has_upload::boolean[])       AS has_upload,
        unnest(@sizes::bigint[])             AS size_bytes,
        unnest(@uploaded_ats::timestamptz[]) AS uploaded_at,
        unnest(@has_delete::boolean[])       AS has_delete,
        unnest(@deleted_ats::timestamptz[])  AS deleted_at,
        unnest(@positions::bigint[])         AS position
), after AS (
    -- Each file's row before (o) by a probe of its key, and after.
    SELECT b.file_id, b.owner_id,
           coalesce(o.size_bytes, CASE WHEN b.has_upload THEN b.size_bytes END) AS size_bytes,
           least(o.uploaded_at, CASE WHEN b.has_upload THEN b.uploaded_at END) AS uploaded_at,
           least(o.deleted_at, CASE WHEN b.has_delete THEN b.deleted_at END) AS deleted_at,
           greatest(o.position, b.position) AS position,
           o.file_id IS NOT NULL AS existed, o.owner_id AS old_owner_id, o.size_bytes AS old_size_bytes,
           o.uploaded_at AS old_uploaded_at, o.deleted_at AS old_deleted_at
    FROM batch AS b
    LEFT JOIN LATERAL (
        -- OFFSET 0 keeps the probe a probe: pulled up into a join, it may
        -- be planned as a scan of every file.
        SELECT f.file_id, f.owner_id, f.size_bytes, f.uploaded_at, f.deleted_at, f.position
        FROM billing_files AS f
        WHERE f.file_id = b.file_id
        OFFSET 0
    ) AS o ON true
), files AS (
    INSERT INTO billing_files (file_id, owner_id, size_bytes, uploaded_at, deleted_at, position)
    SELECT file_id, owner_id, size_bytes, uploaded_at, deleted_at, position FROM after
    ON CONFLICT (file_id) DO UPDATE SET
        size_bytes  = excluded.size_bytes,
        uploaded_at = excluded.uploaded_at,
        deleted_at  = excluded.deleted_at,
        position    = excluded.position
), stored AS (
    SELECT 1 AS sign, owner_id, size_bytes, uploaded_at, deleted_at FROM after
    UNION ALL
    SELECT -1, old_owner_id, old_size_bytes, old_uploaded_at, old_deleted_at FROM after WHERE existed
), changes AS (
    SELECT s.owner_id, s.uploaded_at AS at, s.sign * s.size_bytes::numeric AS delta
    FROM stored AS s
    WHERE s.size_bytes IS NOT NULL AND s.uploaded_at IS NOT NULL AND (s.deleted_at IS NULL OR s.deleted_at > s.uploaded_at)
    UNION ALL
    SELECT s.owner_id, s.deleted_at, -s.sign * s.size_bytes::numeric
    FROM stored AS s
    WHERE s.size_bytes IS NOT NULL AND s.uploaded_at IS NOT NULL AND s.deleted_at > s.uploaded_at
), new_deltas AS (
    SELECT c.owner_id, c.at, sum(c.delta) AS delta
    FROM changes AS c
    GROUP BY c.owner_id, c.at
    HAVING sum(c.delta) <> 0
)
INSERT INTO billing_pending (owner_id, at, delta)
SELECT n.owner_id, n.at, n.delta FROM new_deltas AS n;

-- name: BillingFold :one
-- Folds at most max_rows pending changes into the owners' ledgers, in one
-- statement, and returns how many it took. The caller holds the fold lock
-- (BillingFoldLock): one fold at a time writes the ledger. Each owner's
-- ledger rows from its earliest change on are recomputed from the row
-- before (base): level is the running sum of the deltas, byte_seconds the
-- integral of the level up to each row. Rows whose delta comes to 0 go, so
-- the ledger is the same whichever order the changes came in. A reader sees
-- the changes in billing_pending or in the ledger, never both and never
-- neither: they move in this statement.
WITH taken AS (
    DELETE FROM billing_pending AS p
    WHERE p.ctid = ANY(ARRAY(SELECT q.ctid FROM billing_pending AS q LIMIT @max_rows::int))
    RETURNING p.owner_id, p.at, p.delta
), new_deltas AS (
    SELECT t.owner_id, t.at, sum(t.delta) AS delta
    FROM taken AS t
    GROUP BY t.owner_id, t.at
    HAVING sum(t.delta) <> 0
), firsts AS (
    SELECT n.owner_id, min(n.at) AS from_at FROM new_deltas AS n GROUP BY n.owner_id
), base AS MATERIALIZED (
    SELECT f.owner_id, f.from_at, coalesce(p.level, 0) AS level,
           coalesce(p.byte_seconds, 0) AS byte_seconds, p.at
    FROM firsts AS f
    LEFT JOIN LATERAL (
        SELECT l.level, l.byte_seconds, l.at
        FROM billing_levels AS l
        WHERE l.owner_id = f.owner_id AND l.at < f.from_at
        ORDER BY l.at DESC
        LIMIT 1
    ) AS p ON true
), merged AS (
    SELECT m.owner_id, m.at, sum(m.delta) AS delta
    FROM (
        SELECT n.owner_id, n.at, n.delta FROM new_deltas AS n
        UNION ALL
        -- Each owner's tail by its own range of the key (OFFSET 0: a join
        -- may be planned as a scan of the whole ledger).
        SELECT l.owner_id, l.at, l.delta
        FROM firsts AS f
        CROSS JOIN LATERAL (
            SELECT t.owner_id, t.at, t.delta FROM billing_levels AS t
            WHERE t.owner_id = f.owner_id AND t.at >= f.from_at
            OFFSET 0
        ) AS l
    ) AS m
    GROUP BY m.owner_id, m.at
), leveled AS (
    SELECT m.owner_id, m.at, m.delta,
           b.level + sum(m.delta) OVER w AS level,
           b.byte_seconds + b.level * coalesce(extract(epoch FROM first_value(m.at) OVER w) - extract(epoch FROM b.at), 0) AS start_byte_seconds,
           lead(m.at) OVER w AS next_at
    FROM merged AS m
    JOIN base AS b ON b.owner_id = m.owner_id
    WHERE m.delta <> 0
    WINDOW w AS (PARTITION BY m.owner_id ORDER BY m.at)
), computed AS (
    SELECT v.owner_id, v.at, v.delta, v.level,
           v.start_byte_seconds + coalesce(sum(v.level * (extract(epoch FROM v.next_at) - extract(epoch FROM v.at)))
               OVER (PARTITION BY v.owner_id ORDER BY v.at ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS byte_seconds
    FROM leveled AS v
), gone AS (
    -- By the rows' own addresses, each found by its key: a join of the
    -- ledger with the merged rows may be planned as a scan of the whole
    -- ledger.
    DELETE FROM billing_levels AS l
    WHERE l.ctid = ANY(ARRAY(
        SELECT x.ctid
        FROM merged AS m
        CROSS JOIN LATERAL (
            SELECT b.ctid FROM billing_levels AS b WHERE b.owner_id = m.owner_id AND b.at = m.at
        ) AS x
        WHERE m.delta = 0))
), written AS (
    INSERT INTO billing_levels (owner_id, at, delta, level, byte_seconds)
    SELECT c.owner_id, c.at, c.delta, c.level, c.byte_seconds FROM computed AS c
    ORDER BY c.owner_id, c.at
    ON CONFLICT (owner_id, at) DO UPDATE SET
        delta        = excluded.delta,
        level        = excluded.level,
        byte_seconds = excluded.byte_seconds
)
SELECT count(*)::bigint AS folded FROM taken;

-- name: BillingFoldLock :exec
-- The fold lock, for the rest of the transaction.
SELECT pg_advisory_xact_lock(@key::bigint);

-- name: BillingBalances :batchmany
-- The byte-seconds an owner stored from the start of its ledger up to each
-- of ats (row n answers ats[n]), as billing applied them so far: one
-- lookup of billing_levels_pkey per time, however long the ledger, plus
-- the owner's changes not folded into it yet (billing_pending, which a fold
-- keeps short). The caller cuts the times at now (nothing is stored in the
-- future). Text, exact.
SELECT t.n::bigint AS n,
       (coalesce(l.byte_seconds + l.level * (extract(epoch FROM t.at) - extract(epoch FROM l.at)), 0)
        + coalesce(p.byte_seconds, 0))::text AS byte_seconds
FROM unnest(@ats::timestamptz[]) WITH ORDINALITY AS t(at, n)
LEFT JOIN LATERAL (
    SELECT b.level, b.byte_seconds, b.at
    FROM billing_levels AS b
    WHERE b.owner_id = @owner_id AND b.at <= t.at
    ORDER BY b.at DESC
    LIMIT 1
) AS l ON true
LEFT JOIN LATERAL (
    SELECT sum(q.delta * (extract(epoch FROM t.at) - extract(epoch FROM q.at))) AS byte_seconds
    FROM billing_pending AS q
    WHERE q.owner_id = @owner_id AND q.at < t.at
) AS p ON true
ORDER BY t.n;

-- name: BillingAccount :batchone
-- What billing knows of an owner for a read: its first upload, the highest
-- position applied, its closer state, and the database's clock, the one
-- clock events occur by.
SELECT statement_timestamp()::timestamptz AS now,
       o.first_upload_at,
       coalesce(o.position, 0)::bigint AS position,
       c.next_period_start,
       coalesce(c.cum_amount, 0)::text AS cum_amount
FROM (SELECT @owner_id::uuid AS owner_id) AS q
LEFT JOIN billing_owners AS o ON o.owner_id = q.owner_id
LEFT JOIN billing_close AS c ON c.owner_id = q.owner_id;

-- name: BillingStatementCums :batchmany
-- The running sums of amounts of an owner's closed statements just before
-- each of period_starts (the sum over the statements that start earlier):
-- row n answers period_starts[n]. One lookup per start.
SELECT t.n::bigint AS n, coalesce(s.cum_amount, 0)::text AS cum_amount
FROM unnest(@period_starts::timestamptz[]) WITH ORDINALITY AS t(period_start, n)
LEFT JOIN LATERAL (
    SELECT b.cum_amount
    FROM billing_statements AS b
    WHERE b.owner_id = @owner_id AND b.period_start < t.period_start
    ORDER BY b.period_start DESC
    LIMIT 1
) AS s ON true
ORDER BY t.n;
