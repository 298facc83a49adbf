-- +goose Up

-- Billing keeps, beside its row per file, a ledger per owner: one row per
-- instant at which the bytes the owner stores change (an upload starts a
-- file's bytes, a delete ends them), with the level from then on and the
-- byte-seconds stored up to then. The byte-seconds up to any time T are
-- then one index lookup: the last row at or before T, plus its level times
-- the seconds since. A usage read or a window series costs a lookup per
-- bound, however many files the owner ever stored. Values are exact:
-- deltas and levels are whole bytes, byte-seconds keep the microseconds
-- (scale 6), all numeric.
CREATE TABLE billing_levels (
    owner_id      uuid        NOT NULL,
    at            timestamptz NOT NULL,
    delta         numeric     NOT NULL CHECK (delta <> 0),
    level         numeric     NOT NULL,
    byte_seconds  numeric     NOT NULL,
    PRIMARY KEY (owner_id, at)
);

-- The ledger changes billing applied but has not folded into billing_levels
-- yet: appended by each batch, moved into the ledger by a fold that takes
-- many batches' changes at once (a fold rewrites each owner's ledger rows
-- from its earliest change on, and deliveries come out of time order).
-- Reads add what is here for the owner, so a fold changes no answer.
CREATE TABLE billing_pending (
    owner_id  uuid        NOT NULL,
    at        timestamptz NOT NULL,
    delta     numeric     NOT NULL
);
CREATE INDEX billing_pending_owner_at_idx ON billing_pending (owner_id, at);

-- One row per owner billing has seen: the first upload (its period is the
-- owner's first statement's) and the highest position applied (GET
-- /v1/usage's position).
CREATE TABLE billing_owners (
    owner_id         uuid        PRIMARY KEY,
    first_upload_at  timestamptz,
    position         bigint      NOT NULL
);

-- The closer's state per owner: the start of the first period not closed
-- yet, the running sum of the closed statements' amounts as written
-- (cum_amount, exact), and the SHA-256 state over the ids of the
-- owner's file events up to hash_through (no event can take a position at
-- or below it any more, and all of them occurred before the last closed
-- period's end), so a close hashes only what came since.
CREATE TABLE billing_close (
    owner_id           uuid        PRIMARY KEY,
    next_period_start  timestamptz NOT NULL,
    cum_amount          numeric     NOT NULL,
    hash_state         bytea       NOT NULL,
    hash_through       bigint      NOT NULL,
    hash_covered       bigint      NOT NULL
);
CREATE INDEX billing_close_next_idx ON billing_close (next_period_start);

-- Closed statements, as their statement.closed events say; never updated.
-- amount_units is the amount before it was written: times 3.6e12 (the
-- byte-seconds of a GB-hour), an exact decimal; cum_amount the running sum
-- of the owner's written amounts up to this statement, so the amounts of a
-- run of closed statements are two lookups.
CREATE TABLE billing_statements (
    id                uuid        PRIMARY KEY,
    owner_id          uuid        NOT NULL,
    period_start      timestamptz NOT NULL,
    period_end        timestamptz NOT NULL,
    byte_seconds      numeric     NOT NULL,
    gb_hours          text        NOT NULL,
    currency          text        NOT NULL,
    price_version     integer     NOT NULL,
    lines             jsonb       NOT NULL,
    amount            text        NOT NULL,
    amount_due        text        NOT NULL,
    amount_units      numeric     NOT NULL,
    cum_amount         numeric     NOT NULL,
    covered_position  bigint      NOT NULL,
    events_sha256     text        NOT NULL,
    closed_at         timestamptz NOT NULL,
    position          bigint      NOT NULL,
    CONSTRAINT billing_statements_owner_period_key UNIQUE (owner_id, period_start)
);
CREATE INDEX billing_statements_period_end_idx ON billing_statements (period_end);

-- How far billing is complete: every event of its types at or below
-- complete_through has committed and been applied, or is a gap (its own
-- application failed; its owner's statements wait for it). It moves in two
-- steps: a candidate is proposed with the proposing transaction's own id
-- (above every id handed out before it), and taken once no transaction of
-- this database with a lower id is running.
CREATE TABLE billing_progress (
    id                smallint    PRIMARY KEY CHECK (id = 1),
    complete_through  bigint      NOT NULL DEFAULT 0,
    candidate         bigint,
    candidate_xid     xid8
);
INSERT INTO billing_progress (id) VALUES (1);

CREATE TABLE billing_gaps (
    position     bigint      PRIMARY KEY,
    event_id     uuid        NOT NULL,
    owner_id     uuid        NOT NULL,
    occurred_at  timestamptz NOT NULL
);

-- A period's fence: taken after the period's end, by a transaction whose
-- id (fence_xid) is above that of every transaction that could write an event
-- occurring before the end (occurred_at is taken in the insert, after the
-- transaction has its id). Once no transaction of this database with a
-- lower id runs, the events of the period have all committed, at positions
-- up to passed_position.
CREATE TABLE billing_fences (
    period_end       timestamptz PRIMARY KEY,
    fence_xid        xid8        NOT NULL,
    taken_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    passed_position  bigint,
    passed_at        timestamptz
);

-- The ledger and owners of what billing applied so far.
INSERT INTO billing_owners (owner_id, first_upload_at, position)
SELECT owner_id, min(uploaded_at) FILTER (WHERE size_bytes IS NOT NULL), max(position)
FROM billing_files
GROUP BY owner_id;

INSERT INTO billing_levels (owner_id, at, delta, level, byte_seconds)
SELECT owner_id, at, delta, level,
       coalesce(sum(segment) OVER (PARTITION BY owner_id ORDER BY at ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
FROM (
    SELECT owner_id, at, delta, level,
           level * (extract(epoch FROM lead(at) OVER (PARTITION BY owner_id ORDER BY at)) - extract(epoch FROM at)) AS segment
    FROM (
        SELECT owner_id, at, delta, sum(delta) OVER (PARTITION BY owner_id ORDER BY at) AS level
        FROM (
            SELECT owner_id, at, sum(delta) AS delta
            FROM (
                SELECT owner_id, uploaded_at AS at, size_bytes::numeric AS delta
                FROM billing_files
                WHERE size_bytes IS NOT NULL AND uploaded_at IS NOT NULL AND (deleted_at IS NULL OR deleted_at > uploaded_at)
                UNION ALL
                SELECT owner_id, deleted_at, -size_bytes::numeric
                FROM billing_files
                WHERE size_bytes IS NOT NULL AND uploaded_at IS NOT NULL AND deleted_at > uploaded_at
            ) AS changes
            GROUP BY owner_id, at
            HAVING sum(delta) <> 0
        ) AS merged
    ) AS leveled
) AS segmented;

-- The closer finds an owner's file events since the last close by owner and
-- position (events_file_owner_idx); statement events are found by stream.

-- +goose Down
DROP TABLE billing_fences, billing_gaps, billing_progress, billing_statements, billing_close, billing_owners, billing_pending, billing_levels;
