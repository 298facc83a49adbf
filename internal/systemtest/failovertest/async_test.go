package failovertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/testpgpair"
)

// lostDeletes is how many files the test deletes on the cut-off primary
// (lost with it) and again on the new one, where each delete takes the
// lost one's stream version and so its event id.
const lostDeletes = 5

// TestAsynchronousFailover: under a steady load of commands, with the
// subscribers held back (the old primary's inbox locked, as subscribers
// that lag behind the relay), the standby is cut off from the primary,
// which goes on committing and relaying; its postmaster is SIGKILLed and
// the standby promoted a second later. What the old primary committed
// meanwhile is lost, while RabbitMQ and the outside consumer have it:
// both subscribers dead-letter each lost event's message (unknown_event,
// or mismatch) rather than apply it, storage and usage equal the new
// primary's events exactly, and the new primary's events that take a lost
// event's position or stream version (its id) are applied as themselves.
func TestAsynchronousFailover(t *testing.T) {
	p := usePair(t, testpgpair.Async)
	ctx := e2ekit.CtxFor(t, 5*time.Minute)
	d := newDeployment(t, p, "async")
	l := d.startLoad(4, 15*time.Millisecond)
	d.awaitFlow(ctx, l, 200)

	// Files whose deletes the failover will lose, uploaded and applied
	// before anything is cut.
	v := d.newUser("versions")
	var files []uuid.UUID
	var last int64
	for i := range lostDeletes {
		var f uuid.UUID
		f, last = d.uploadOne(&v, fmt.Sprint("kept-", i))
		files = append(files, f)
	}
	d.minPositionRead(&v, last)

	// The subscribers apply nothing more on the old primary: what they
	// take from now on stays unacked, and comes back to them after the
	// promotion. Everything committed until the lock reaches the standby
	// before the cut.
	lock := holdInbox(t, ctx, p.primary)
	shippedAt := time.Now()
	awaitReplayed(t, ctx, lock, p.standby)
	cutAt := p.cut("both")

	// The old primary goes on alone: the load, and deletes of the files.
	for _, f := range files {
		e2ekit.Call(t, d.http, d.apis[0].Addr, http.StatusNoContent, "DELETE", "/v1/files/"+f.String(), v.token, nil)
	}
	deletedVersion := func(id string) bool {
		first, _ := d.rec.Snapshot()
		b, ok := first[id]
		var body struct {
			Type string `json:"type"`
		}
		return ok && json.Unmarshal(b.Body, &body) == nil && body.Type == "file.deleted"
	}
	e2ekit.Eventually(t, 20*time.Second, "the cut-off primary's deletes relayed to the outside consumer", func() (bool, string) {
		n := 0
		for _, f := range files {
			if deletedVersion(eventID(f, 2)) {
				n++
			}
		}
		return n == len(files), fmt.Sprintf("%d of %d", n, len(files))
	})
	time.Sleep(time.Second)
	killAt := p.kill()
	time.Sleep(time.Second)
	promotedAt := p.promote()
	p.heal()

	firstOK, perAPI := d.awaitAPIsBack(l, promotedAt)
	firstConfirm, perWorker := d.awaitWorkersBack(promotedAt)
	t.Logf("every process listening on the new primary %s after the promotion", d.awaitListening(ctx, promotedAt).Round(time.Millisecond))
	t.Logf("figures (asynchronous): first 2xx command %s after the promotion (%v); relays' first confirm %s after it (%s)",
		firstOK.Round(time.Millisecond), perAPI, firstConfirm.Round(time.Millisecond), perWorker)

	// The lost deletes again: the new primary never saw them, so each is
	// a delete anew, at the lost one's stream version.
	for _, f := range files {
		e2ekit.Call(t, d.http, d.apis[1].Addr, http.StatusNoContent, "DELETE", "/v1/files/"+f.String(), v.token, nil)
	}
	time.Sleep(2 * time.Second)
	l.stop()

	events := e2ekit.LoadEvents(t, ctx, d.pool)
	stored := map[string]e2ekit.Event{}
	byPosition := map[int64]e2ekit.Event{}
	for _, e := range events {
		stored[e.ID.String()] = e
		byPosition[e.Position] = e
	}
	lostCommands := d.verifyCommandsAsync(l, events, shippedAt, promotedAt)

	// The lost events: messages the outside consumer got that name no
	// event of the new primary at their position.
	first, _ := d.rec.Snapshot()
	type lostEvent struct {
		ID       string    `json:"id"`
		Type     string    `json:"type"`
		StreamID uuid.UUID `json:"stream_id"`
		Version  int32     `json:"version"`
		Position int64     `json:"position"`
	}
	var lost []lostEvent
	for id, m := range first {
		var b lostEvent
		require.NoError(t, json.Unmarshal(m.Body, &b), "message %s", id)
		if e, ok := stored[id]; !ok || e.Position != b.Position {
			lost = append(lost, b)
		}
	}
	require.GreaterOrEqual(t, len(lost), lostDeletes, "events the failover lost, seen at the outside consumer")
	var samePosition, sameVersion []e2ekit.Event
	for _, b := range lost {
		if e, ok := byPosition[b.Position]; ok {
			samePosition = append(samePosition, e)
		}
		if e, ok := stored[b.ID]; ok {
			require.Equal(t, b.StreamID, e.StreamID, "an id names one stream version")
			require.Equal(t, b.Version, e.Version, "an id names one stream version")
			sameVersion = append(sameVersion, e)
		}
	}
	// The deletes done again, at least (a load command whose COMMIT the
	// kill cut off after its relay, retried after the promotion, would be
	// one more).
	for _, f := range files {
		require.True(t, slices.ContainsFunc(sameVersion, func(e e2ekit.Event) bool { return e.ID.String() == eventID(f, 2) }),
			"the delete of %s done again took the lost one's stream version", f)
	}

	d.drained(ctx, events)
	require.Len(t, e2ekit.LoadEvents(t, ctx, d.pool), len(events), "events committed after the load stopped")

	// Both subscribers dead-letter every lost event's message, and
	// nothing else.
	lostIDs := map[string]bool{}
	for _, b := range lost {
		lostIDs[b.ID] = true
	}
	for _, sub := range subscribers.Movable().Names() {
		e2ekit.Eventually(t, 30*time.Second, sub+" dead-letters every lost event", func() (bool, string) {
			dead := d.deadLetters(sub)
			missing := 0
			for id := range lostIDs {
				if _, ok := dead[id]; !ok {
					missing++
				}
			}
			return missing == 0, fmt.Sprintf("%d of %d lost events not dead-lettered", missing, len(lostIDs))
		})
		dead := d.deadLetters(sub)
		reasons := map[string]int{}
		for id, dl := range dead {
			require.True(t, lostIDs[id], "%s dead-lettered %s (%s), which is no lost event", sub, id, dl.reason)
			require.Contains(t, []string{"unknown_event", "mismatch"}, dl.reason, "%s's dead letter %s", sub, id)
			reasons[dl.reason]++
		}
		t.Logf("%s dead-lettered the %d lost events: %v", sub, len(dead), reasons)
	}

	// The lost deletes' messages once more, now that the deletes done
	// again hold their ids (a late redelivery): they still name no stored
	// event at their positions, and die again rather than apply.
	var late []amqp.Delivery
	for _, e := range sameVersion {
		late = append(late, first[e.ID.String()])
	}
	before := map[string]map[string]deadLetter{}
	for _, sub := range subscribers.Movable().Names() {
		before[sub] = d.deadLetters(sub)
	}
	d.publishAgain(late)
	for _, sub := range subscribers.Movable().Names() {
		e2ekit.Eventually(t, 30*time.Second, sub+" dead-letters the lost deletes' late copies", func() (bool, string) {
			dead := d.deadLetters(sub)
			again := 0
			for _, m := range late {
				if dl := dead[m.MessageId]; dl.deaths > before[sub][m.MessageId].deaths {
					require.Contains(t, []string{"unknown_event", "mismatch"}, dl.reason, "%s's dead letter %s", sub, m.MessageId)
					again++
				}
			}
			return again == len(late), fmt.Sprintf("%d of %d late copies dead-lettered", again, len(late))
		})
	}

	// Storage and usage follow the new primary's events alone, and each
	// event that took a lost one's position or id is applied as itself.
	d.exact(ctx, events, append(slices.Clone(l.users), &v))
	for _, e := range slices.Concat(samePosition, sameVersion) {
		if e.Type != "file.uploaded" && e.Type != "file.deleted" {
			continue
		}
		var n int
		require.NoError(t, d.pool.QueryRow(ctx, "SELECT count(*) FROM inbox WHERE event_id = $1 AND position = $2 AND subscriber IN ('storage', 'billing')",
			e.ID, e.Position).Scan(&n))
		require.Equal(t, 2, n, "%s %s at position %d (a lost event's position or id) applied by both subscribers", e.Type, e.ID, e.Position)
	}
	d.streamOrder(events)
	d.requireAlive()
	d.logsOfTheOutage(killAt)
	t.Logf("%d events lost with the old primary (%d load commands answered 2xx while it was cut off, lost); %d new events took a lost one's position, %d its stream version; killed %s and promoted %s after the cut",
		len(lost), lostCommands, len(samePosition), len(sameVersion), killAt.Sub(cutAt).Round(time.Millisecond), promotedAt.Sub(cutAt).Round(time.Millisecond))
}

// eventID is the id of a file stream's version, as eventstore makes it.
func eventID(stream uuid.UUID, version int32) string {
	return eventstore.ID(stream, version).String()
}

// holdInbox locks the inbox of the server at url against writes until
// that server goes, in a transaction of its own, and returns its
// connection.
func holdInbox(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, "BEGIN; SET LOCAL lock_timeout = '10s'; LOCK TABLE inbox IN EXCLUSIVE MODE")
	require.NoError(t, err)
	return conn
}

// awaitReplayed waits until the standby at url replayed the primary's WAL
// up to where it is now, read on primary.
func awaitReplayed(t *testing.T, ctx context.Context, primary *pgx.Conn, url string) {
	t.Helper()
	var lsn string
	require.NoError(t, primary.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn))
	standby, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer standby.Close(ctx)
	e2ekit.Eventually(t, 10*time.Second, "the standby replayed the primary's WAL to "+lsn, func() (bool, string) {
		var done bool
		err := standby.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&done)
		return err == nil && done, fmt.Sprint(err)
	})
}
