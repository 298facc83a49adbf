-- name: StatusSubscribers :batchmany
-- Per subscriber, in the order given (types: each one's event types,
-- comma-separated): the highest position it applied (its newest inbox row,
-- or its watermark when that is higher: the inbox is pruned below the
-- watermark), the dead letters it keeps, the newest committed event of its
-- types and the oldest one past what it applied, with its age (how far
-- behind it is and for how long, whether anything consumes for it or
-- not), and what healing handed it. Each is a short index read (inbox_subscriber_position_idx,
-- the primary keys of inbox_watermarks, dead_letters, events and heals):
-- the newest event of its types is the first of them in a backward scan of
-- events, the oldest unapplied the first in a forward one from the applied
-- position.
SELECT a.subscriber, a.applied_position, a.dead_letters,
       coalesce(n.position, 0)::bigint AS newest_position,
       coalesce(o.position, 0)::bigint AS oldest_unapplied_position,
       coalesce(extract(epoch FROM clock_timestamp() - o.occurred_at), 0)::float8 AS oldest_unapplied_age_seconds,
       coalesce(h.healed, 0)::bigint AS healed,
       h.last_healed_at
FROM (
    SELECT s.ord, s.name::text AS subscriber, string_to_array(s.types, ',') AS types,
           greatest(
               coalesce((SELECT max(i.position) FROM inbox AS i WHERE i.subscriber = s.name), 0),
               coalesce((SELECT w.applied_through FROM inbox_watermarks AS w WHERE w.subscriber = s.name), 0)
           )::bigint AS applied_position,
           (SELECT count(*) FROM dead_letters AS d WHERE d.subscriber = s.name)::bigint AS dead_letters
    FROM (SELECT unnest(@subscribers::text[]) AS name, unnest(@types::text[]) AS types,
                 generate_series(1, cardinality(@subscribers::text[])) AS ord) s
) a
LEFT JOIN LATERAL (
    SELECT e.position FROM events AS e WHERE e.type = ANY(a.types) ORDER BY e.position DESC LIMIT 1
) n ON true
LEFT JOIN LATERAL (
    SELECT e.position, e.occurred_at FROM events AS e
    WHERE e.position > a.applied_position AND e.type = ANY(a.types)
    ORDER BY e.position LIMIT 1
) o ON true
LEFT JOIN heals AS h ON h.subscriber = a.subscriber
ORDER BY a.ord;
