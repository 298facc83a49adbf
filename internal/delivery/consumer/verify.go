package consumer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/canonjson"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// Why a message is dead-lettered (the dead letter's reason, and the
// epoch_consumer_dead_lettered_total label).
const (
	// ReasonUnknownEvent: no stored event has the message's id at the
	// position its body names.
	ReasonUnknownEvent = "unknown_event"
	// ReasonMismatch: the stored event there differs from the body (type,
	// stream, version or data).
	ReasonMismatch = "mismatch"
	// ReasonMalformed: the body is not a message of the contract.
	ReasonMalformed = "malformed"
	// ReasonFailed: a genuine event the subscriber failed to apply, on
	// every delivery up to the delivery limit.
	ReasonFailed = "failed"
)

// maxDeadLetterBody bounds the body kept with a dead letter: enough for any
// message of the contract, not for whatever a publisher may send.
const maxDeadLetterBody = 64 << 10

// notice is one delivery as the consumer reads it: a notice that an event
// was stored, checked against the event store and never applied as it came.
type notice struct {
	d       amqp.Delivery
	claimed eventstore.Event // the body, decoded; zero when it did not decode
	reason  string           // why it is dead-lettered; "" while it stands
	stored  eventstore.Event // the stored event it names, once verified
	// The delivery's process span and its context, when it is traced.
	ctx  context.Context
	span trace.Span
}

func readNotice(d amqp.Delivery) notice {
	n := notice{d: d}
	e, err := outbox.DecodeMessage(d.Body)
	if err != nil {
		n.reason = ReasonMalformed
		return n
	}
	n.claimed = e
	return n
}

// deadLetterID names the dead letter of a message: its message id, or when
// it has none that fits, the hash of its body (the same message dying
// again is the same dead letter).
func (n *notice) deadLetterID() string {
	// An id the dead letters cannot keep (domain.CheckDeadLetterID: Postgres
	// text takes neither NUL nor invalid UTF-8) is named by its body too;
	// its length is bounded in bytes, which are never fewer than its
	// characters.
	if id := n.d.MessageId; len(id) <= domain.MaxDeadLetterID && domain.CheckDeadLetterID("message_id", id) == nil {
		return id
	}
	sum := sha256.Sum256(n.d.Body)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// claimStored checks the standing notices against the event store and
// claims the inbox rows of those the subscriber must apply, in one
// statement (InboxClaimStored), settling each notice: verified (stored set
// to the event as stored) or dead-lettered with its reason. It returns the
// stored events new to the subscriber, in delivery order, each once.
func claimStored(ctx context.Context, tx *database.Tx, sub dispatch.Subscriber, notices []notice) ([]eventstore.Event, error) {
	p := &dbsqlc.InboxClaimStoredParams{Subscriber: sub.Name(), Subscribed: sub.EventTypes()}
	var standing []*notice
	for i := range notices {
		n := &notices[i]
		if n.reason != "" {
			continue
		}
		id, err := uuid.Parse(n.d.MessageId)
		switch {
		case err != nil:
			n.reason = ReasonUnknownEvent // no stored event has an id that is not a UUID
			continue
		}
		standing = append(standing, n)
		p.Ids = append(p.Ids, id)
		p.Positions = append(p.Positions, n.claimed.Position)
		p.Types = append(p.Types, n.claimed.Type)
		p.StreamTypes = append(p.StreamTypes, n.claimed.StreamType)
		p.StreamIds = append(p.StreamIds, n.claimed.StreamID)
		p.Versions = append(p.Versions, n.claimed.Version)
	}
	if len(standing) == 0 {
		return nil, nil
	}
	rows, err := dbsqlc.New().InboxClaimStored(ctx, tx, p)
	if err != nil {
		return nil, fmt.Errorf("%s inbox: %w", sub.Name(), err)
	}
	var fresh []eventstore.Event
	claimedNow := map[uuid.UUID]bool{} // claimed by this statement
	genuine := map[uuid.UUID]bool{}    // verified in this batch
	for _, r := range rows {
		if r.N < 1 || int(r.N) > len(standing) {
			return nil, fmt.Errorf("%s inbox: row %d of %d deliveries", sub.Name(), r.N, len(standing))
		}
		n := standing[r.N-1]
		switch {
		case !r.Found:
			n.reason = ReasonUnknownEvent
			continue
		case r.Fresh:
			claimedNow[*r.ID] = true
		}
		if !r.Matches || n.claimed.ID != *r.ID || !sameData(r.Data, n.claimed.Data) {
			n.reason = ReasonMismatch
			continue
		}
		n.stored = eventstore.Event{ID: *r.ID, StreamType: r.StreamType, StreamID: *r.StreamID, Version: r.Version,
			Type: r.Type, Data: r.Data, OccurredAt: *r.OccurredAt, Position: r.Position}
		if r.Fresh && !genuine[n.stored.ID] {
			fresh = append(fresh, n.stored) // the same event twice in one batch is applied once
		}
		genuine[n.stored.ID] = true
	}
	// An altered copy claims nothing: its claim is taken back, unless a
	// genuine copy in the same batch stands behind it.
	var unclaim []uuid.UUID
	for id := range claimedNow {
		if !genuine[id] {
			unclaim = append(unclaim, id)
		}
	}
	if len(unclaim) > 0 {
		if err := dbsqlc.New().InboxUnclaim(ctx, tx, &dbsqlc.InboxUnclaimParams{Subscriber: sub.Name(), EventIds: unclaim}); err != nil {
			return nil, fmt.Errorf("%s inbox: %w", sub.Name(), err)
		}
	}
	return fresh, nil
}

// sameData reports whether a body's data is the stored data as a JSON
// value. The relay sends the stored text compacted, so the common case is
// a byte comparison; anything else is compared as decoded values.
func sameData(stored, claimed []byte) bool {
	var compact bytes.Buffer
	if json.Compact(&compact, stored) == nil && bytes.Equal(compact.Bytes(), claimed) {
		return true
	}
	a, errA := canonjson.Of(stored)
	b, errB := canonjson.Of(claimed)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// recordDead keeps the dead-lettered notices in dead_letters, in tx, and
// returns the reasons of those that were not kept already.
func recordDead(ctx context.Context, tx *database.Tx, subscriber string, notices []notice) ([]string, error) {
	p := &dbsqlc.DeadLetterRecordParams{Subscriber: subscriber}
	seen := map[string]bool{}
	for i := range notices {
		n := &notices[i]
		if n.reason == "" {
			continue
		}
		id := n.deadLetterID()
		if seen[id] {
			continue // the same message twice in one batch dies once
		}
		seen[id] = true
		body := n.d.Body
		if len(body) > maxDeadLetterBody {
			body = body[:maxDeadLetterBody]
		}
		if body == nil {
			body = []byte{}
		}
		p.EventIds = append(p.EventIds, id)
		p.Positions = append(p.Positions, n.claimed.Position)
		p.Reasons = append(p.Reasons, n.reason)
		p.Bodies = append(p.Bodies, body)
	}
	if len(p.EventIds) == 0 {
		return nil, nil
	}
	sortDeadLetters(p)
	rows, err := dbsqlc.New().DeadLetterRecord(ctx, tx, p)
	if err != nil {
		return nil, fmt.Errorf("record dead letters: %w", err)
	}
	var fresh []string
	for _, r := range rows {
		if r.Inserted {
			fresh = append(fresh, r.Reason)
		}
	}
	return fresh, nil
}

// sortDeadLetters orders p by event id: concurrent batches keeping the same
// dead letters lock their rows in one order.
func sortDeadLetters(p *dbsqlc.DeadLetterRecordParams) {
	idx := make([]int, len(p.EventIds))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(p.EventIds[a], p.EventIds[b]) })
	ids, positions, reasons, bodies := p.EventIds, p.Positions, p.Reasons, p.Bodies
	p.EventIds, p.Positions, p.Reasons, p.Bodies = make([]string, len(idx)), make([]int64, len(idx)), make([]string, len(idx)), make([][]byte, len(idx))
	for i, j := range idx {
		p.EventIds[i], p.Positions[i], p.Reasons[i], p.Bodies[i] = ids[j], positions[j], reasons[j], bodies[j]
	}
}
