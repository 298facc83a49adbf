package eventstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
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
