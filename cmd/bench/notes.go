package main

// methodNotes is the fixed part of BENCHMARKS.md: what each figure and its
// ceiling are. The run's own notes (sizes, rates) follow it.
const methodNotes = `- **B1 commands/s** — link/unlink through the API at each concurrency for a
  fixed time; **ceiling**: the same commands through the application's own
  code without HTTP (command.Service in Service.Run, the job read back with
  the COMMIT as the handlers do), on a pool of the api's default size, at
  the same concurrency. Target at c=32: ratio ≥ 0.6.
- **B2 relay msgs/s** — a backlog of file events in the outbox, drained by a
  worker running only the relay until the outbox is empty (rows are deleted
  only after their confirms). **Ceiling**: raw amqp091-go publishing of the
  same messages with pipelined deferred confirms to quorum queues bound the
  same way. Target: ratio ≥ 0.6.
- **B3 commit → billing commit** — p50/p95/p99 of inbox.handled_at for
  subscriber billing − the moment the command's answer reached the bench
  (just after its commit; matched by Epoch-Position), at a steady command
  rate; the same from events.occurred_at (an upper bound: it is set before
  the command's transaction begins) is in the detail. handled_at is stamped
  in the first of billing's two round trips, before its COMMIT; the mean
  time of billing's transactions (billing_tx_mean_ms, from the worker's
  epoch_consumer_batch_seconds) bounds that gap.
  **Ceiling**: the raw broker round trip (persistent publish with a confirm
  to a quorum queue, consumed on another connection). Targets: p50 ≤ 3×,
  p99 ≤ 10×.
- **B4** — link-then-read pairs, the read on another HTTP connection; the
  value is the number of previews that missed the file. Target: 0.
- **B5** — peak RSS (VmHWM) of the api during B1 and of the relay worker
  during B2. Target: < 100 MiB each.
- **B6** — PUT /v1/jobs/{id}/files with many files: median latency against
  a one-file set (ratio ≤ 5), the two sizes taking turns on an emptied job,
  and the statements the api sent for one request
  (epoch_db_statements_total on the api's /metrics) against a one-file set
  (equal). Beside it, for what HTTP adds: the same sets through the
  application's own code without HTTP (B1's ceiling's path,
  Service.SetJobFiles), 1,000 files against one, taking turns with the
  api's sets (no target; the detail gives api ÷ raw for each size).
- **B7** — uploads and deletes at B1's best rate with relay and both
  subscribers running; least-squares slope of the outbox backlog and of each
  subscriber's lag (positions behind the newest file event), sampled every
  second. Target: slope ≤ 1% of the command rate per second (flat).
- **B8** — each subscriber alone drains the backlog B2 left in its queue;
  messages applied per second, from starting the worker to a full inbox
  (read from the worker's epoch_consumer_processed_total, then checked
  with one count of the inbox) and an empty queue. Target: at least the
  relay's B2 rate.
- **B9 bounded preview** — one job holding domain.MaxJobFiles (10,000)
  files, each named with 255 ASCII characters (domain.MaxTextLength),
  uploaded through POST /v1/files and set in one PUT /v1/jobs/{id}/files:
  the size of one GET /v1/jobs/{id} body (target < 4 MiB), and the api's
  peak RSS (VmHWM, reset first) over rounds of 16 such GETs at once, each
  reading its whole body (target < 100 MiB), with the GETs' p50/p99
  latency in the detail. No ceiling. Alone: ` + "`go run ./cmd/bench -only B9`" + `.
- **B10 waits do not slow others** — with no storage subscriber running,
  63 users who each uploaded one file hold 8 GET /v1/storage?min_position=
  waits each (catchup.DefaultMaxWaitsPerOwner; 504 waits, each restarted
  as soon as it answers 504 after httpapi.DefaultCatchUpTimeout, 5 s),
  and with 500 or more in flight (epoch_api_catchup_waits) another user
  reads its job and its file list in turn from 4 closed-loop clients for
  3 s: that p99 against the same reads with no waits just before
  (**ceiling**). Target: ratio ≤ 2. The detail gives both p50s, the waits
  in flight (sampled), the 504s and 429s seen (no 429 at 8 per user), the
  bench database's transactions per second (pg_stat_database xact_commit)
  over one timeout with only the waits running and, for as long, with the
  api idle, and the api's request statements per second then
  (epoch_db_statements_total: the waits' first looks). Alone:
  ` + "`go run ./cmd/bench -only B10`" + `.
- **B11 relay msgs/s on the cluster** — B2 on the three-node cluster of
  scripts/rabbitmq-cluster (the bench starts it when it is down, and stops
  it at the end only then), on a vhost of the bench's own there: the same
  backlog drained by one relay worker whose EPOCH_AMQP_URL lists the three
  nodes. The bench declares the topology first, from rabbit_a, with
  broker.DeclareTopology as the worker does (quorum queues on all three
  nodes, their leaders on rabbit_a), under the dead-letter policy
  (broker.DeadLetterPolicyDefinition) a deployment sets. **Ceiling**: raw amqp091-go
  publishing of the same messages with B2's window of deferred confirms,
  from rabbit_a into the same exchange and queues (purged before the
  relay starts). The detail's placement gives the leaders and the nodes
  the worker's connections landed on: a connection away from the leader
  pays a hop the raw publisher does not. Target: ratio ≥ 0.6, as B2.
- **B12 commit → billing commit on the cluster** — B3 on the cluster: the
  same load, sizes and measure, with one worker (relay, storage, billing)
  whose EPOCH_AMQP_URL lists the three nodes. **Ceiling**: the raw round
  trip through the cluster during the same load (publish with a confirm
  to catacloud.events, consumed on another connection, both on rabbit_a,
  from a quorum queue declared by broker.DeclareTopology like a
  subscriber's). Targets: p50 ≤ 3×, p99 ≤ 10×, as B3.
- **B13 one relay worker against two on the cluster** — a backlog drained
  by one relay worker process, then the same events' outbox rows queued
  again and drained by two processes started at once; each from the
  start to an empty outbox. The two-worker line's ceiling column holds
  the one-worker rate, so its ratio is two ÷ one. Target: ≥ 0.9, no loss:
  the relays split the partitions without waiting on each other, and a
  gain needs cores the one-worker drain left idle (its "what limited it").
- **Every figure** starts from a settled database (VACUUM ANALYZE and a
  CHECKPOINT before it), so it does not pay for the dead rows of the one
  before or meet an autovacuum of them halfway.
- **What limited it** — the CPU each process group used during the
  measurement, in % of one core (postgres = all its backends, rabbitmq =
  beam.smp of the machine's own node, rabbit_a/b/c = the cluster's nodes,
  bench = this tool, which shares the machine).
`
