package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// errRollback ends a fuzz case's transaction: nothing it claimed stays.
var errRollback = errors.New("rolled back on purpose")

// FuzzDelivery hands the consumer's decoding and verification any body
// under any message id, against a store holding a few real events: decoding
// never panics, a delivery is accepted only when it names a stored event
// as it is stored (id, position, type, stream, version and data as a JSON
// value), what is accepted is the stored event and never the body, and a
// genuine message is accepted.
func FuzzDelivery(f *testing.F) {
	pool, _ := testdb.New(f)
	ctx := context.Background()
	// Fixed ids, in a fresh database (positions 1 and 2): every fuzzing
	// process stores the same events, so the seeds name them there too.
	owner := uuid.MustParse("0f0f0f0f-0000-4000-8000-000000000001")
	file := uuid.MustParse("0f0f0f0f-0000-4000-8000-000000000002")
	up, err := eventstore.New(domain.StreamFile, file, 1, domain.FileUploaded,
		domain.FileUploadedData{OwnerID: owner, Name: "a.txt", SizeBytes: 7, ContentType: "text/plain"}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	del, err := eventstore.New(domain.StreamFile, file, 2, domain.FileDeleted, domain.FileDeletedData{OwnerID: owner}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	if err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		return eventstore.Append(ctx, tx, []eventstore.Event{up, del})
	}); err != nil {
		f.Fatal(err)
	}
	// As the store holds them, which is what the relay sends and what a
	// subscriber must be handed.
	stored, err := eventstore.After(ctx, pool, 0, 10)
	if err != nil || len(stored) != 2 {
		f.Fatalf("read back %d events: %v", len(stored), err)
	}
	genuine := map[string][]byte{}
	for _, e := range stored {
		body, err := outbox.MessageBody(e)
		if err != nil {
			f.Fatal(err)
		}
		genuine[e.ID.String()] = body
		f.Add(body, e.ID.String())
		f.Add(bytes.Replace(body, []byte(`"size_bytes":7`), []byte(`"size_bytes":8`), 1), e.ID.String())
		f.Add(bytes.Replace(body, []byte(`{"`), []byte(`{ "`), 2), e.ID.String())
		f.Add(body, uuid.NewString())
	}
	f.Add([]byte(`{}`), "")
	f.Add([]byte(`not json`), "x")

	sub := storage.Subscriber{}
	f.Fuzz(func(t *testing.T, body []byte, messageID string) {
		n := readNotice(amqp.Delivery{Body: body, MessageId: messageID})
		if _, err := outbox.DecodeMessage(body); (err != nil) != (n.reason == ReasonMalformed) {
			t.Fatalf("a body that does not decode is malformed, and only such a body: %v, reason %q", err, n.reason)
		}
		notices := []notice{n}
		err := database.InTx(ctx, pool, func(tx *database.Tx) error {
			if _, err := claimStored(ctx, tx, sub, notices); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("verification failed: %v", err)
		}
		got := notices[0]
		match, named := matchingStored(stored, messageID, got.claimed)
		if got.reason == "" {
			if !match {
				t.Fatalf("accepted a message that does not match the store: id %q, body %s", messageID, body)
			}
			if !reflect.DeepEqual(got.stored.Data, named.Data) || got.stored.ID != named.ID || got.stored.Position != named.Position {
				t.Fatalf("accepted %+v, not the stored event %+v", got.stored, named)
			}
		} else if got.reason != ReasonUnknownEvent && got.reason != ReasonMismatch && got.reason != ReasonMalformed {
			t.Fatalf("rejected for %q, not a reason of the contract", got.reason)
		}
		if g, ok := genuine[messageID]; ok && bytes.Equal(g, body) && got.reason != "" {
			t.Fatalf("a genuine message was rejected: %s", got.reason)
		}
	})
}

// matchingStored says whether a stored event is what a message with id
// messageID and decoded body claimed names, field by field and its data as
// a JSON value, and returns that stored event.
func matchingStored(stored []eventstore.Event, messageID string, claimed eventstore.Event) (bool, eventstore.Event) {
	for _, s := range stored {
		if s.ID.String() != messageID || claimed.ID != s.ID || claimed.Position != s.Position || claimed.Type != s.Type ||
			claimed.StreamType != s.StreamType || claimed.StreamID != s.StreamID || claimed.Version != s.Version {
			continue
		}
		var a, b any
		if json.Unmarshal(s.Data, &a) != nil || json.Unmarshal(claimed.Data, &b) != nil {
			return false, s
		}
		return reflect.DeepEqual(a, b), s
	}
	return false, eventstore.Event{}
}
