// Package failovertest holds Epoch's tests of losing the Postgres primary
// (DESIGN.md, "Losing the Postgres primary") against a real primary and
// standby (scripts/postgres-pair): two api and two worker processes on
// EPOCH_DATABASE_URL naming both hosts with
// target_session_attrs=read-write, a vhost of the machine's RabbitMQ, an
// outside consumer recording the exchange, and a steady load of commands
// with Idempotency-Keys, retried on 503. The primary's postmaster is
// SIGKILLed and the standby promoted:
//   - synchronous replication, with the standby's acks cut first so that
//     commits in flight reach the standby while their answers are lost:
//     every 2xx command is in the new primary and billed once, the gap
//     answers 503 and never 500, each retry lands once, every process
//     serves again within 10 s of the promotion without a restart (each
//     api answers, each worker's relay confirms and its subscribers
//     apply, each process's LISTEN session is back on the new primary),
//     order at the outside consumer holds, min_position reads answer;
//   - asynchronous replication, the standby cut off first: what the old
//     primary committed and relayed meanwhile is lost, both subscribers
//     dead-letter its messages (unknown_event or mismatch) instead of
//     applying them, storage and usage equal the new primary's events
//     exactly, and later events that take a lost event's position or
//     stream version are applied as themselves.
//
// Each test logs the time from the promotion to the first 2xx command and
// to the relays' first confirm (BENCHMARKS.md's figures).
//
// The pair is one per machine (fixed ports), so each test holds an
// exclusive flock on /tmp/epoch-pgpair.lock while it uses it and brings a
// fresh pair up itself (a promoted standby cannot follow again without a
// new base backup), taking it down at its end. A pair that does not come
// up, or a missing nft, fails the test, never skips it. The package has no
// non-test code; this file only names it.
package failovertest
