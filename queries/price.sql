-- name: PriceBookList :batchmany
-- The price versions: the events of the price_book stream, in version
-- order, by the stream's key (events_stream_version_key).
SELECT version, data, position, occurred_at
FROM events
WHERE stream_id = @stream_id AND version > @after_version
ORDER BY version
LIMIT @max_count;
