package eventstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

func TestAppendAssignsPositionsInOrderAndChecksVersion(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	stream := uuid.New()
	now := time.Now()

	var events []eventstore.Event
	for v := int32(1); v <= 3; v++ {
		e, err := eventstore.New("job", stream, v, "job.file_linked", map[string]string{"file_id": uuid.NewString()}, now)
		require.NoError(t, err)
		events = append(events, e)
	}
	require.NoError(t, eventstore.Append(ctx, pool, events))
	require.Greater(t, events[0].Position, int64(0))
	require.Less(t, events[0].Position, events[1].Position)
	require.Less(t, events[1].Position, events[2].Position)

	dup, err := eventstore.New("job", stream, 3, "job.deleted", struct{}{}, now)
	require.NoError(t, err)
	require.ErrorIs(t, eventstore.Append(ctx, pool, []eventstore.Event{dup}), eventstore.ErrConcurrency)

	read, err := eventstore.After(ctx, pool, 0, 10)
	require.NoError(t, err)
	require.Len(t, read, 3)
	for i := range read {
		require.Equal(t, events[i].ID, read[i].ID)
		require.Equal(t, events[i].Position, read[i].Position)
		require.True(t, events[i].OccurredAt.Equal(read[i].OccurredAt))
		require.JSONEq(t, string(events[i].Data), string(read[i].Data))
	}
}

// An event's id is a function of its stream and version: equal for the
// same pair, different when either differs, and a UUIDv5 (so it never
// equals a random or time-ordered id).
func TestIDNamesStreamAndVersion(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	require.Equal(t, eventstore.ID(a, 1), eventstore.ID(a, 1))
	seen := map[uuid.UUID]bool{}
	for _, stream := range []uuid.UUID{a, b} {
		for v := int32(1); v <= 1000; v++ {
			id := eventstore.ID(stream, v)
			require.False(t, seen[id], "id of %s v%d repeats", stream, v)
			seen[id] = true
			require.Equal(t, uuid.Version(5), id.Version())
		}
	}
	e, err := eventstore.New("job", a, 7, "job.deleted", struct{}{}, time.Now())
	require.NoError(t, err)
	require.Equal(t, eventstore.ID(a, 7), e.ID)
}

// Decode gives the same value from the payload of an event made here and
// from the data of the same event read back, and reports bad data.
func TestDecodeFromPayloadOrData(t *testing.T) {
	type linked struct {
		FileID uuid.UUID `json:"file_id"`
	}
	made, err := eventstore.New("job", uuid.New(), 1, "job.file_linked", linked{FileID: uuid.New()}, time.Now())
	require.NoError(t, err)
	fromPayload, err := eventstore.Decode[linked](made)
	require.NoError(t, err)
	readBack := made
	readBack.Payload = nil
	fromData, err := eventstore.Decode[linked](readBack)
	require.NoError(t, err)
	require.Equal(t, fromPayload, fromData)
	require.Equal(t, made.Payload, fromData)

	readBack.Data = []byte(`{"file_id": 7}`)
	_, err = eventstore.Decode[linked](readBack)
	require.ErrorContains(t, err, "decode job.file_linked data")
}

// TestCopySetsTheStoredPositions: Copy draws the positions it writes, in
// the events' order, after an Append's, and reads back as it set them; a
// version taken already is ErrConcurrency.
func TestCopySetsTheStoredPositions(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)

	created, err := eventstore.New("job", uuid.New(), 1, "job.created", struct{}{}, time.Time{})
	require.NoError(t, err)
	appended := []eventstore.Event{created}
	require.NoError(t, eventstore.Append(ctx, pool, appended))
	first := appended[0]

	var events []eventstore.Event
	for range 3 {
		e, err := eventstore.New("statement", uuid.New(), 1, "statement.closed", map[string]string{"a": "b"}, at)
		require.NoError(t, err)
		events = append(events, e)
	}
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Copy(ctx, tx, events) }))
	require.Greater(t, events[0].Position, first.Position)
	require.Less(t, events[0].Position, events[1].Position)
	require.Less(t, events[1].Position, events[2].Position)

	read, err := eventstore.After(ctx, pool, first.Position, 10)
	require.NoError(t, err)
	require.Len(t, read, 3)
	for i := range read {
		require.Equal(t, events[i].ID, read[i].ID)
		require.Equal(t, events[i].Position, read[i].Position)
		require.True(t, at.Equal(read[i].OccurredAt))
	}

	again := events[1]
	err = database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Copy(ctx, tx, []eventstore.Event{again}) })
	require.ErrorIs(t, err, eventstore.ErrConcurrency)
}
