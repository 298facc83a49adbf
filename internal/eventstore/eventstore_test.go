package eventstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/eventstore"
	"github.com/catacloud/epoch/internal/testdb"
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
