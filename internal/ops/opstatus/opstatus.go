// Package opstatus reads what Postgres says of the event flow's health for
// GET /v1/admin/status and the worker's metrics: the outbox backlog, the
// open transactions the relay cannot get past, and each subscriber's
// applied position, how far and how long it is behind the event store,
// its dead letters and what healing handed it. It needs no relay or
// consumer to run.
package opstatus

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// MaxBlockers is how many open transactions Read lists at most.
const MaxBlockers = 100

// Status is the Postgres side of the flow at one moment.
type Status struct {
	Outbox      Outbox
	Subscribers []Subscriber // in the order asked for
}

// Outbox is the relay's backlog, counted as the relay counts it.
type Outbox struct {
	// Pending is the events waiting to be relayed (a row holds a run of
	// them).
	Pending int64
	// OldestAgeSeconds is the age of the oldest row; 0 when none waits.
	OldestAgeSeconds float64
	// BlockedBy are the open writing transactions, oldest first: outbox
	// rows they hold stay invisible to the relay until they end.
	BlockedBy []Transaction
}

// Transaction is one open transaction of the database.
type Transaction struct {
	PID        int32
	State      string // pg_stat_activity.state: "active", "idle in transaction", ...
	AgeSeconds float64
}

// Subscriber is what Postgres holds of one subscriber.
type Subscriber struct {
	Name string
	// AppliedPosition is the highest position it applied: its newest
	// inbox row or its watermark, whichever is higher.
	AppliedPosition int64
	// DeadLetters counts the rows it keeps in dead_letters.
	DeadLetters int64
	// LagPositions is how far the newest committed event of its types is
	// past AppliedPosition (0 when it applied that one).
	LagPositions int64
	// LagSeconds is the age (by its occurred_at) of the oldest event of
	// its types past AppliedPosition: how long it has been behind; 0 when
	// it is not.
	LagSeconds float64
	// Healed counts the events healing handed it from the event store,
	// and LastHealedAt is the last time it did (nil: never).
	Healed       int64
	LastHealedAt *time.Time
}

// Read reads the status of the outbox and of subscribers in one round trip.
func Read(ctx context.Context, pool *pgxpool.Pool, subscribers []dispatch.Subscriber) (Status, error) {
	q := dbsqlc.New()
	p := &dbsqlc.StatusSubscribersParams{Subscribers: make([]string, len(subscribers)), Types: make([]string, len(subscribers))}
	for i, sub := range subscribers {
		p.Subscribers[i], p.Types[i] = sub.Name(), strings.Join(sub.EventTypes(), ",")
	}
	var (
		backlog *dbsqlc.OutboxBacklogRow
		open    []*dbsqlc.OutboxOpenTransactionsRow
		subs    []*dbsqlc.StatusSubscribersRow
	)
	err := database.Pipeline(ctx, pool, func(db *database.Conn) (err error) {
		backlogs := q.OutboxBacklog(ctx, db, []*time.Time{nil})
		opens := q.OutboxOpenTransactions(ctx, db, []int32{MaxBlockers})
		statuses := q.StatusSubscribers(ctx, db, []*dbsqlc.StatusSubscribersParams{p})
		if backlog, err = database.One(backlogs); err != nil {
			return err
		}
		if open, err = database.Many(opens); err != nil {
			return err
		}
		subs, err = database.Many(statuses)
		return err
	})
	if err != nil {
		return Status{}, fmt.Errorf("read status: %w", err)
	}
	s := Status{
		Outbox: Outbox{
			Pending: backlog.Pending, OldestAgeSeconds: backlog.OldestAgeSeconds,
			BlockedBy: make([]Transaction, len(open)),
		},
		Subscribers: make([]Subscriber, len(subs)),
	}
	for i, t := range open {
		s.Outbox.BlockedBy[i] = Transaction{PID: t.Pid, State: t.State, AgeSeconds: t.AgeSeconds}
	}
	for i, r := range subs {
		s.Subscribers[i] = Subscriber{
			Name: r.Subscriber, AppliedPosition: r.AppliedPosition, DeadLetters: r.DeadLetters,
			LagPositions: max(0, r.NewestPosition-r.AppliedPosition), Healed: r.Healed, LastHealedAt: r.LastHealedAt,
		}
		if r.OldestUnappliedPosition > 0 {
			s.Subscribers[i].LagSeconds = max(0, r.OldestUnappliedAgeSeconds)
		}
	}
	return s, nil
}
