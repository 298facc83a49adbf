-- +goose Up

-- Long-running operator actions (redrive, rebuild, projection verify): one
-- row each, read back by GET /v1/admin/operations/{id}. At most one runs per
-- target. Its runner holds the session advisory lock lock_key while it
-- runs, so a row still 'running' whose lock anyone can take belongs to a
-- process that stopped: it is failed (OperationFailAbandoned) before it is
-- read or before another starts.
CREATE TABLE operations (
    id              uuid        PRIMARY KEY,
    kind            text        NOT NULL,
    target          text        NOT NULL,
    state           text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    events_applied  bigint      NOT NULL DEFAULT 0,
    differences     bigint      NOT NULL DEFAULT 0,
    error           text,
    lock_key        bigint      NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz
);
CREATE UNIQUE INDEX operations_one_running_idx ON operations (target) WHERE state = 'running';

-- +goose Down
DROP TABLE operations;
