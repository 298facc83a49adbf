-- +goose Up

-- Dead letters of the remote subscribers, kept until an operator replays or
-- discards them. A row is a message that a subscriber refused (it names no
-- stored event, differs from the stored event, cannot be decoded) or that
-- failed until its queue's delivery limit. event_id is the message's
-- message_id as received (text: a forgery need not carry a UUID), position
-- the position its body claimed, if any; what the stored event says is
-- looked up from events when the list is read, never taken from the body.
-- A second death of the same message for the same subscriber adds to deaths
-- instead of adding a row, so a dead letter counts once.
CREATE TABLE dead_letters (
    subscriber     text        NOT NULL,
    event_id       text        NOT NULL CHECK (length(event_id) <= 255),
    position       bigint,
    reason         text        NOT NULL,
    deaths         integer     NOT NULL DEFAULT 1 CHECK (deaths > 0),
    first_dead_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_dead_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    body           bytea       NOT NULL,
    PRIMARY KEY (subscriber, event_id)
);
CREATE INDEX dead_letters_subscriber_first_idx ON dead_letters (subscriber, first_dead_at, event_id);

-- +goose Down
DROP TABLE dead_letters;
