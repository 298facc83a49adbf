// Package dispatch runs subscribers where configuration puts them. A
// subscriber is one piece of code with a name and the event types it
// handles; it runs either inline, inside the command's transaction, or
// remote, fed from RabbitMQ by a worker. Every event also gets its outbox
// row, whatever runs inline, so remote subscribers and other consumers of
// the exchange always see the full history.
package dispatch

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// Subscriber handles events of the types it names, in the transaction it is
// given. It must be deterministic in its events: the same events give the
// same rows whichever path delivered them.
type Subscriber interface {
	Name() string
	EventTypes() []string
	Handle(ctx context.Context, tx *database.Tx, events []eventstore.Event) error
}

// Rebuildable is a subscriber whose rows a rebuild can recompute from the
// event store (internal/ops/rebuild): it names the tables it writes, each with
// a primary key, and writes nothing else.
type Rebuildable interface {
	Subscriber
	Tables() []string
}

// Settler is a Rebuildable subscriber that moves some of its rows on after
// Handle wrote them (billing folds its pending ledger changes into the
// ledger): Settle brings the tables it finds by their unqualified names to
// that settled form, in tx, so two sets of its rows that follow from the
// same events compare equal.
type Settler interface {
	Rebuildable
	Settle(ctx context.Context, tx *database.Tx) error
}

// Dispatcher runs the inline subscribers of a command and queues its events
// for the relay.
type Dispatcher struct {
	projections []Subscriber // always inline: the API reads them back
	inline      []Subscriber // movable subscribers configured inline
	remote      []Subscriber // movable subscribers left to the workers
}

// New places subscribers. projections always run inline; each of movable
// runs inline when its name is in inlineNames and remote otherwise. An
// unknown name in inlineNames is an error, so a typo in configuration is not
// silently a remote subscriber.
func New(projections, movable []Subscriber, inlineNames []string) (*Dispatcher, error) {
	d := &Dispatcher{projections: projections}
	known := make(map[string]bool)
	for _, s := range movable {
		known[s.Name()] = true
	}
	for _, name := range inlineNames {
		if name = strings.TrimSpace(name); name != "" && !known[name] {
			return nil, fmt.Errorf("dispatch: unknown inline subscriber %q", name)
		}
	}
	for _, s := range movable {
		if slices.Contains(inlineNames, s.Name()) {
			d.inline = append(d.inline, s)
		} else {
			d.remote = append(d.remote, s)
		}
	}
	return d, nil
}

// Inline returns the names of the movable subscribers placed inline.
func (d *Dispatcher) Inline() []string {
	names := make([]string, len(d.inline))
	for i, s := range d.inline {
		names[i] = s.Name()
	}
	return names
}

// Dispatch runs in the command's transaction, after the events were
// appended (positions set). An error from any subscriber fails the command:
// the caller rolls back, and nothing of it is kept.
func (d *Dispatcher) Dispatch(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	for _, s := range d.projections {
		if err := handle(ctx, tx, s, events); err != nil {
			return err
		}
	}
	for _, s := range d.inline {
		if err := Deliver(ctx, tx, s, events); err != nil {
			return err
		}
	}
	return outbox.Enqueue(ctx, tx, events)
}

// AppliedChannel is the NOTIFY channel on which a subscriber's commit says,
// with the subscriber's name, that it applied events (Announce).
const AppliedChannel = "epoch_applied"

// Announce queues, on the subscriber's transaction, the NOTIFY on
// AppliedChannel that follows its COMMIT. A lost one only delays the
// waits, which look again on their own.
func Announce(ctx context.Context, tx *database.Tx, subscriber string) error {
	// A hint: the transaction committed, whatever becomes of it.
	tx.AfterCommit(func(db database.DBTX) { dbsqlc.New().InboxAnnounce(ctx, db, []string{subscriber}) }, nil)
	return nil
}

// Notify sends the NOTIFY on AppliedChannel for subscriber at once, as a
// transaction of its own: for a subscriber whose batches committed already.
func Notify(ctx context.Context, db database.DBTX, subscriber string) error {
	return database.Exec(dbsqlc.New().InboxAnnounce(ctx, db, []string{subscriber}))
}

// Deliver hands events to a deduplicated subscriber: inbox rows are written
// in the same transaction, and only the events it has not handled yet reach
// it. Both the inline path and the remote consumers go through here, which
// is what makes a remote copy of an inline-handled event a no-op.
func Deliver(ctx context.Context, tx *database.Tx, s Subscriber, events []eventstore.Event) error {
	_, err := DeliverCount(ctx, tx, s, events)
	return err
}

// DeliverCount is Deliver, also reporting how many events were new.
func DeliverCount(ctx context.Context, tx *database.Tx, s Subscriber, events []eventstore.Event) (int, error) {
	relevant := Filter(s, events)
	if len(relevant) == 0 {
		return 0, nil
	}
	p := &dbsqlc.InboxClaimParams{
		Subscriber: s.Name(),
		EventIds:   make([]uuid.UUID, len(relevant)),
		Positions:  make([]int64, len(relevant)),
	}
	for i, e := range relevant {
		p.EventIds[i], p.Positions[i] = e.ID, e.Position
	}
	fresh, err := dbsqlc.New().InboxClaim(ctx, tx, p)
	if err != nil {
		return 0, fmt.Errorf("%s inbox: %w", s.Name(), err)
	}
	if len(fresh) == 0 {
		return 0, nil
	}
	isFresh := make(map[uuid.UUID]bool, len(fresh))
	for _, id := range fresh {
		isFresh[id] = true
	}
	news := relevant[:0:0]
	for _, e := range relevant {
		if isFresh[e.ID] {
			news = append(news, e)
			delete(isFresh, e.ID) // the same event twice in one batch counts once
		}
	}
	if err := s.Handle(ctx, tx, news); err != nil {
		return 0, fmt.Errorf("%s: %w", s.Name(), err)
	}
	return len(news), nil
}

func handle(ctx context.Context, tx *database.Tx, s Subscriber, events []eventstore.Event) error {
	relevant := Filter(s, events)
	if len(relevant) == 0 {
		return nil
	}
	if err := s.Handle(ctx, tx, relevant); err != nil {
		return fmt.Errorf("%s: %w", s.Name(), err)
	}
	return nil
}

// Filter keeps the events of the types s handles, in their order.
func Filter(s Subscriber, events []eventstore.Event) []eventstore.Event {
	types := s.EventTypes()
	out := make([]eventstore.Event, 0, len(events))
	for _, e := range events {
		if slices.Contains(types, e.Type) {
			out = append(out, e)
		}
	}
	return out
}
