-- +goose Up

-- billing_close is only ever read by its owner's key (the closer's due
-- owners, an account's read): no query looks it up by next_period_start,
-- and every close paid for the index's entry.
DROP INDEX IF EXISTS billing_close_next_idx;

-- +goose Down
CREATE INDEX IF NOT EXISTS billing_close_next_idx ON billing_close (next_period_start);
