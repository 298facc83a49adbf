-- name: StatusSubscribers :batchmany
-- Per subscriber, in the order given: the highest position it applied (its
-- newest inbox row, or its watermark when that is higher: the inbox is
-- pruned below the watermark) and the dead letters it keeps. Each is one
-- short index read (inbox_subscriber_position_idx, inbox_watermarks' and
-- dead_letters' primary keys), whatever the tables hold.
SELECT s.name::text AS subscriber,
       greatest(
           coalesce((SELECT max(i.position) FROM inbox AS i WHERE i.subscriber = s.name), 0),
           coalesce((SELECT w.applied_through FROM inbox_watermarks AS w WHERE w.subscriber = s.name), 0)
       )::bigint AS applied_position,
       (SELECT count(*) FROM dead_letters AS d WHERE d.subscriber = s.name)::bigint AS dead_letters
FROM unnest(@subscribers::text[]) WITH ORDINALITY AS s(name, ord)
ORDER BY s.ord;
