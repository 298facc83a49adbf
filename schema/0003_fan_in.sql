-- +goose Up

-- An event's id is derived from its stream and version (eventstore.ID,
-- a UUIDv5), so the unique (stream_id, version) key already makes ids
-- unique; their own unique index cost a fifth of every append.
ALTER TABLE events DROP CONSTRAINT events_id_key;

-- A set of 1,000 files writes 1,000 job_files rows, and on this path every
-- index is a cost per file. Two indexes serve every read: the primary key
-- (file_id, job_id) finds a file's jobs (file deletion) and a job's rows
-- among given files (link, unlink), and (job_id, linked_position) reads a
-- job's files in link order (the preview, job deletion). The former
-- (job_id, file_id) key and (file_id) index did no more than these two.
ALTER TABLE job_files DROP CONSTRAINT job_files_pkey;
DROP INDEX job_files_file_idx;
ALTER TABLE job_files ADD PRIMARY KEY (file_id, job_id);

-- One outbox row per run of a command's events: events of one partition
-- with consecutive positions. A 1,000-file set queues one row (and two
-- index entries) instead of 1,000. The row covers the positions from
-- position, its key, to last_position; no other transaction's event can lie
-- between them, since the run's positions are consecutive. The relay claims
-- whole rows, in key order within a partition, and deletes a row once all
-- of its events are confirmed (a row confirmed only in part moves its key
-- to the first event still to be relayed: OutboxKeepUnconfirmed).
ALTER TABLE outbox ADD COLUMN last_position bigint;
UPDATE outbox SET last_position = position;
ALTER TABLE outbox
    ALTER COLUMN last_position SET NOT NULL,
    ADD CONSTRAINT outbox_run_check CHECK (last_position >= position);

-- +goose Down
ALTER TABLE job_files DROP CONSTRAINT job_files_pkey;
ALTER TABLE job_files ADD PRIMARY KEY (job_id, file_id);
CREATE INDEX job_files_file_idx ON job_files (file_id);
INSERT INTO outbox (position, partition, last_position, transaction_id, created_at)
SELECT p, o.partition, p, o.transaction_id, o.created_at
FROM outbox AS o CROSS JOIN LATERAL generate_series(o.position + 1, o.last_position) AS p;
ALTER TABLE outbox DROP COLUMN last_position;
ALTER TABLE events ADD CONSTRAINT events_id_key UNIQUE (id);
