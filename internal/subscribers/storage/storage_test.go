package storage_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

func TestStorage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	now := time.Now()

	// Three files per owner: one kept (the largest size there is), one
	// deleted, one kept; the same history for each owner, delivered
	// differently.
	history := func(owner uuid.UUID) []eventstore.Event {
		var evs []eventstore.Event
		for i, size := range []int64{1<<63 - 1, 500, 1<<63 - 1} {
			id := uuid.New()
			up, err := eventstore.New(domain.StreamFile, id, 1, domain.FileUploaded,
				domain.FileUploadedData{OwnerID: owner, Name: "f", SizeBytes: size, ContentType: "text/plain"}, now)
			require.NoError(t, err)
			evs = append(evs, up)
			if i == 1 {
				del, err := eventstore.New(domain.StreamFile, id, 2, domain.FileDeleted, domain.FileDeletedData{OwnerID: owner}, now)
				require.NoError(t, err)
				evs = append(evs, del)
			}
		}
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, evs) }))
		return evs
	}
	apply := func(evs []eventstore.Event, viaInbox bool) {
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error {
			if viaInbox {
				return dispatch.Deliver(ctx, tx, storage.Subscriber{}, evs)
			}
			return storage.Subscriber{}.Handle(ctx, tx, evs)
		}))
	}
	read := func(owner uuid.UUID) storage.Usage {
		u, err := storage.Read(ctx, pool, owner)
		require.NoError(t, err)
		return u
	}

	empty := read(uuid.New())
	require.Equal(t, storage.Usage{FileCount: 0, Bytes: "0", Position: 0}, empty)

	a := uuid.New()
	evs := history(a)
	apply(evs, true)
	want := storage.Usage{FileCount: 2, Bytes: json.Number("18446744073709551614"), Position: evs[3].Position}
	require.Equal(t, want, read(a))
	body, err := json.Marshal(want)
	require.NoError(t, err)
	require.JSONEq(t, `{"file_count":2,"bytes":18446744073709551614,"position":`+jsonInt(evs[3].Position)+`}`, string(body))

	apply(evs, true)
	apply([]eventstore.Event{evs[2], evs[1], evs[2]}, true)
	require.Equal(t, want, read(a), "a duplicate changed storage")

	// The delete before its upload, one event per batch, straight to the
	// table (no inbox): the rows alone must not care.
	b := uuid.New()
	evs = history(b)
	for _, i := range []int{2, 3, 1, 2, 0, 1, 3} {
		apply(evs[i:i+1], false)
	}
	got := read(b)
	require.Equal(t, want.FileCount, got.FileCount)
	require.Equal(t, want.Bytes, got.Bytes)
	require.Equal(t, evs[3].Position, got.Position)

	// Only a delete seen so far: nothing stored, but progress is reported.
	c := uuid.New()
	evs = history(c)
	apply(evs[2:3], true)
	require.Equal(t, storage.Usage{FileCount: 0, Bytes: "0", Position: evs[2].Position}, read(c))
}

func TestStorageRejectsMalformedEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	for _, data := range []string{`{"owner_id":"not-a-uuid"}`, `{"size_bytes":1}`, `[]`} {
		e, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded, json.RawMessage(data), time.Now())
		require.NoError(t, err)
		err = database.InTx(ctx, pool, func(tx *database.Tx) error { return storage.Subscriber{}.Handle(ctx, tx, []eventstore.Event{e}) })
		require.ErrorIs(t, err, storage.ErrMalformedEvent, data)
	}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
