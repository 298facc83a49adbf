-- +goose Up

-- Users and their tokens are plain rows: identity is not part of the domain's
-- history. Only a SHA-256 of the bearer token is kept.
CREATE TABLE users (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    token_hash  bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The event store: the truth every projection can be rebuilt from.
-- position is global and grows with every insert; rolled-back transactions
-- leave gaps. (stream_id, version) is unique: that index is the optimistic
-- concurrency check of an append.
CREATE TABLE events (
    position     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid        NOT NULL UNIQUE,
    stream_type  text        NOT NULL,
    stream_id    uuid        NOT NULL,
    version      integer     NOT NULL CHECK (version > 0),
    type         text        NOT NULL,
    data         jsonb       NOT NULL,
    occurred_at  timestamptz NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- The transactional outbox: one row per event still to be relayed to
-- RabbitMQ. Rows are written in the command's transaction and deleted once
-- the broker confirmed them, so the table only holds the backlog.
-- partition is a hash of the stream: a relay owns whole partitions at a time,
-- which keeps one stream's messages in version (= position) order even when
-- several relays run. transaction_id lets the relay name the open
-- transactions whose rows it cannot see yet.
CREATE TABLE outbox (
    position        bigint      PRIMARY KEY,
    partition       smallint    NOT NULL,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_partition_position_idx ON outbox (partition, position);

-- Projections, written inline in the command's transaction.
-- created_position orders lists newest first and serves as their cursor.
CREATE TABLE files (
    id                uuid        PRIMARY KEY,
    owner_id          uuid        NOT NULL,
    name              text        NOT NULL,
    size_bytes        bigint      NOT NULL CHECK (size_bytes >= 0),
    content_type      text        NOT NULL,
    created_at        timestamptz NOT NULL,
    created_position  bigint      NOT NULL,
    version           integer     NOT NULL,
    position          bigint      NOT NULL
);
CREATE INDEX files_owner_created_idx ON files (owner_id, created_position DESC);

CREATE TABLE jobs (
    id                uuid        PRIMARY KEY,
    owner_id          uuid        NOT NULL,
    name              text        NOT NULL,
    created_at        timestamptz NOT NULL,
    created_position  bigint      NOT NULL,
    version           integer     NOT NULL,
    position          bigint      NOT NULL,
    file_count        bigint      NOT NULL DEFAULT 0,
    total_bytes       numeric     NOT NULL DEFAULT 0
);
CREATE INDEX jobs_owner_created_idx ON jobs (owner_id, created_position DESC);

-- A file's name and size never change, so they are copied here: a preview
-- reads one table, and an unlink knows the bytes to subtract even when the
-- file row is gone.
CREATE TABLE job_files (
    job_id           uuid    NOT NULL,
    file_id          uuid    NOT NULL,
    name             text    NOT NULL,
    size_bytes       bigint  NOT NULL,
    linked_position  bigint  NOT NULL,
    PRIMARY KEY (job_id, file_id)
);
CREATE INDEX job_files_job_linked_idx ON job_files (job_id, linked_position);
CREATE INDEX job_files_file_idx ON job_files (file_id);

-- Idempotency keys: the first successful answer to a command, kept 24 h.
CREATE TABLE idempotency_keys (
    user_id        uuid        NOT NULL,
    key            text        NOT NULL,
    request_hash   bytea       NOT NULL,
    status         integer     NOT NULL,
    headers        jsonb       NOT NULL,
    body           bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- The inbox: which events a deduplicated subscriber has applied. A row is
-- written in the same transaction as the subscriber's own rows, so a second
-- delivery of an event (inline then remote, or a broker redelivery) is a no-op.
CREATE TABLE inbox (
    subscriber  text        NOT NULL,
    event_id    uuid        NOT NULL,
    position    bigint      NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (subscriber, event_id)
);

-- +goose Down
DROP TABLE inbox, idempotency_keys, job_files, jobs, files, outbox, events, users;
