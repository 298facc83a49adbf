-- +goose Up

-- What healing handed each remote subscriber from the event store, because
-- no message brought it (a purged queue, a message the broker lost or kept
-- from its consumers): counted in the transaction that applied it, so the
-- count is exact whichever worker healed, and GET /v1/admin/status shows it
-- whoever runs.
CREATE TABLE heals (
    subscriber       text        PRIMARY KEY,
    healed           bigint      NOT NULL DEFAULT 0,
    last_position    bigint      NOT NULL DEFAULT 0,
    last_healed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- +goose Down
DROP TABLE heals;
