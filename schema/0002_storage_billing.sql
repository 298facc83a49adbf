-- +goose Up

-- The storage and billing subscribers keep one row per file, keyed by
-- file_id, that each event of the file fills in: the upload sets the size
-- (and, for billing, uploaded_at), the delete sets deleted (deleted_at).
-- Whichever arrives first creates the row and the other completes it, and a
-- second copy of either sets the same values again, so neither the order nor
-- duplicates of deliveries change what the rows say. A file seen only by its
-- delete has no size yet and counts nothing. position is the highest event
-- position applied to the row: the subscriber's progress for its owner.

CREATE TABLE storage_files (
    file_id     uuid    PRIMARY KEY,
    owner_id    uuid    NOT NULL,
    size_bytes  bigint,                          -- NULL until the upload arrives
    deleted     boolean NOT NULL DEFAULT false,
    position    bigint  NOT NULL
);
CREATE INDEX storage_files_owner_idx ON storage_files (owner_id) INCLUDE (size_bytes, deleted, position);

CREATE TABLE billing_files (
    file_id      uuid        PRIMARY KEY,
    owner_id     uuid        NOT NULL,
    size_bytes   bigint,                         -- NULL until the upload arrives
    uploaded_at  timestamptz,                    -- occurred_at of file.uploaded
    deleted_at   timestamptz,                    -- occurred_at of file.deleted
    position     bigint      NOT NULL
);
CREATE INDEX billing_files_owner_idx ON billing_files (owner_id);

-- min_position waits ask "which of this owner's file events has the
-- subscriber not applied yet?". File events carry the owner only in their
-- data; this partial index finds one owner's file events by position
-- without scanning other users' history.
CREATE INDEX events_file_owner_idx ON events ((data->>'owner_id'), position) WHERE stream_type = 'file';

-- +goose Down
DROP INDEX events_file_owner_idx;
DROP TABLE billing_files, storage_files;
