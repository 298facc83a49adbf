package consumer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/dbsqlc"
	"github.com/catacloud/epoch/internal/eventstore"
	"github.com/catacloud/epoch/internal/outbox"
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

// maxDeadLetterID is the longest message id kept as a dead letter's id
// (the column's bound); longer or missing ones are named by their body's
// hash.
const maxDeadLetterID = 255

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
	if id := n.d.MessageId; id != "" && len(id) <= maxDeadLetterID {
		return id
	}
	sum := sha256.Sum256(n.d.Body)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// verifyAll looks up, in one statement, the stored events the standing
// notices name (by the body's position), and settles each: verified (its
// stored event to apply) or dead-lettered with its reason.
func verifyAll(ctx context.Context, tx pgx.Tx, notices []notice) error {
	positions := make([]int64, 0, len(notices))
	for _, n := range notices {
		if n.reason == "" {
			positions = append(positions, n.claimed.Position)
		}
	}
	if len(positions) == 0 {
		return nil
	}
	stored, err := eventstore.AtPositions(ctx, tx, positions)
	if err != nil {
		return err
	}
	byPosition := make(map[int64]eventstore.Event, len(stored))
	for _, e := range stored {
		byPosition[e.Position] = e
	}
	for i := range notices {
		n := &notices[i]
		if n.reason != "" {
			continue
		}
		e, ok := byPosition[n.claimed.Position]
		switch {
		case !ok || e.ID.String() != n.d.MessageId:
			n.reason = ReasonUnknownEvent
		case !sameEvent(e, n.claimed):
			n.reason = ReasonMismatch
		default:
			n.stored = e
		}
	}
	return nil
}

// sameEvent reports whether a message body says what the stored event
// does: the same id, type, stream, version and data (as JSON values: the
// body's data need not be written byte for byte as Postgres writes it).
func sameEvent(stored, claimed eventstore.Event) bool {
	if stored.ID != claimed.ID || stored.Type != claimed.Type || stored.StreamType != claimed.StreamType ||
		stored.StreamID != claimed.StreamID || stored.Version != claimed.Version {
		return false
	}
	a, errA := canonicalJSON(stored.Data)
	b, errB := canonicalJSON(claimed.Data)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

func canonicalJSON(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// recordDead keeps the dead-lettered notices in dead_letters, in tx, and
// returns the reasons of those that were not kept already.
func recordDead(ctx context.Context, tx pgx.Tx, subscriber string, notices []notice) ([]string, error) {
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
