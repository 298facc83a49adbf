package httpapi

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/ops/opstatus"
)

type statusOutput struct {
	Outbox      statusOutbox       `json:"outbox"`
	Subscribers []statusSubscriber `json:"subscribers"`
}

type statusOutbox struct {
	Pending int64 `json:"pending"`
	// OldestAgeSeconds is 0 when nothing waits, as the gauge
	// epoch_outbox_oldest_pending_age_seconds says it.
	OldestAgeSeconds float64             `json:"oldest_age_seconds"`
	BlockedBy        []statusTransaction `json:"blocked_by"`
}

type statusTransaction struct {
	PID        int32   `json:"pid"`
	State      string  `json:"state"`
	AgeSeconds float64 `json:"age_seconds"`
}

type statusSubscriber struct {
	Name            string `json:"name"`
	Placement       string `json:"placement"`
	AppliedPosition int64  `json:"applied_position"`
	// QueueMessages is null when the broker could not be asked in time.
	QueueMessages *int64 `json:"queue_messages"`
	DeadLetters   int64  `json:"dead_letters"`
	// LagPositions and LagSeconds: how far the newest committed event of
	// its types is past AppliedPosition, and the age of the oldest one it
	// has not applied (0 and 0 when it is caught up).
	LagPositions int64   `json:"lag_positions"`
	LagSeconds   float64 `json:"lag_seconds"`
	// Healed counts the events healing handed it from the event store;
	// LastHealedAt is null while it never did.
	Healed       int64      `json:"healed"`
	LastHealedAt *time.Time `json:"last_healed_at"`
}

// status is GET /v1/admin/status: the outbox and each movable subscriber,
// from Postgres in one round trip, with the queue depths the broker gives
// meanwhile. It needs no relay or worker to run, and answers without the
// depths when the broker does not.
func (s *server) status(w http.ResponseWriter, r *http.Request) {
	names := make([]string, len(s.cfg.Movable))
	for i, sub := range s.cfg.Movable {
		names[i] = sub.Name()
	}
	inline := s.cfg.Commands.Inline()
	// Asked while Postgres answers; given up on when the handler returns.
	qctx, qcancel := context.WithTimeout(r.Context(), s.cfg.QueueTimeout)
	defer qcancel()
	depths := s.queueDepths(qctx, names)

	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	st, err := opstatus.Read(ctx, s.cfg.Pool, s.cfg.Movable)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := statusOutput{
		Outbox: statusOutbox{
			Pending: st.Outbox.Pending, OldestAgeSeconds: st.Outbox.OldestAgeSeconds,
			BlockedBy: make([]statusTransaction, len(st.Outbox.BlockedBy)),
		},
		Subscribers: make([]statusSubscriber, len(st.Subscribers)),
	}
	for i, t := range st.Outbox.BlockedBy {
		out.Outbox.BlockedBy[i] = statusTransaction{PID: t.PID, State: t.State, AgeSeconds: t.AgeSeconds}
	}
	counts := depths()
	for i, sub := range st.Subscribers {
		placement := PlacementRemote
		if slices.Contains(inline, sub.Name) {
			placement = PlacementInline
		}
		out.Subscribers[i] = statusSubscriber{
			Name: sub.Name, Placement: placement,
			AppliedPosition: sub.AppliedPosition, QueueMessages: counts[i], DeadLetters: sub.DeadLetters,
			LagPositions: sub.LagPositions, LagSeconds: sub.LagSeconds, Healed: sub.Healed,
		}
		if sub.LastHealedAt != nil {
			at := sub.LastHealedAt.UTC()
			out.Subscribers[i].LastHealedAt = &at
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// queueDepths starts asking the broker for each subscriber's queue depth,
// all at once, and returns the wait for the answers: nil where the broker
// failed or did not answer before ctx ended.
func (s *server) queueDepths(ctx context.Context, names []string) func() []*int64 {
	counts := make([]*int64, len(names))
	if s.cfg.QueueMessages == nil {
		return func() []*int64 { return counts }
	}
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.cfg.QueueMessages(ctx, broker.QueueName(name))
			if err != nil {
				s.log.WarnContext(ctx, "admin status: queue depth unknown", "queue", broker.QueueName(name), "error", err)
				return
			}
			counts[i] = &n
		}()
	}
	return func() []*int64 {
		wg.Wait()
		return counts
	}
}
