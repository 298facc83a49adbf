-- +goose Up

-- The W3C trace context of the request (or delivery) whose transaction
-- wrote the row: the relay carries it into the AMQP headers of the row's
-- messages, so the command's trace goes on into each subscriber. NULL when
-- that transaction was not traced.
ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;

-- +goose Down
ALTER TABLE outbox DROP COLUMN traceparent, DROP COLUMN tracestate;
