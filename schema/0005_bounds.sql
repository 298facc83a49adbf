-- +goose Up

-- How far each remote subscriber is known to be complete: every event of its
-- types with a position ≤ applied_through has an inbox row, so the inbox rows
-- at or below it can go, and a claim at or below it is a redelivery by
-- definition (InboxClaim drops it). A watermark only moves in two steps
-- (InboxWatermarkPropose, then InboxWatermarkAdopt): a position is proposed
-- with the snapshot's xmax, and adopted only once every transaction that was
-- running then has ended and the events up to it are still all applied, so
-- an event committed late with a low position is never skipped.
CREATE TABLE inbox_watermarks (
    subscriber       text        PRIMARY KEY,
    applied_through  bigint      NOT NULL DEFAULT 0,
    candidate        bigint,
    candidate_xmax   xid8,
    adopted_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Pruning deletes a subscriber's inbox rows by position.
CREATE INDEX inbox_subscriber_position_idx ON inbox (subscriber, position);

-- +goose Down
DROP INDEX inbox_subscriber_position_idx;
DROP TABLE inbox_watermarks;
