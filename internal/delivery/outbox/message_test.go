package outbox_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/outbox"
)

func TestMessageBodyRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 20, 12, 44, 0, time.UTC)
	e, err := eventstore.New("file", uuid.New(), 3, "file.uploaded", map[string]any{"size_bytes": 12}, at)
	require.NoError(t, err)
	e.Position = 42

	b, err := outbox.MessageBody(e)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"`+e.ID.String()+`","type":"file.uploaded","stream_type":"file","stream_id":"`+e.StreamID.String()+
		`","version":3,"position":42,"occurred_at":"2026-11-25T20:12:44.000000Z","data":{"size_bytes":12}}`, string(b))

	got, err := outbox.DecodeMessage(b)
	require.NoError(t, err)
	e.Payload = nil // a received event has only its data
	require.Equal(t, e, got)

	m, err := outbox.Message(e)
	require.NoError(t, err)
	require.Equal(t, "file.uploaded", m.RoutingKey)
	require.Equal(t, e.ID.String(), m.Publishing.MessageId)
}

func TestDecodeMessageRejectsIncomplete(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{}`,
		`not json`,
		`{"id":"0190a000-0000-7000-8000-000000000001","type":"file.deleted","stream_type":"file","stream_id":"0190a000-0000-7000-8000-000000000002","version":0,"position":1,"occurred_at":"2026-11-25T20:12:44.123456Z","data":{}}`,
		`{"id":"0190a000-0000-7000-8000-000000000001","type":"file.deleted","stream_type":"file","stream_id":"0190a000-0000-7000-8000-000000000002","version":1,"position":1,"occurred_at":"yesterday","data":{}}`,
		`{"id":"0190a000-0000-7000-8000-000000000001","type":"file.deleted","stream_type":"file","stream_id":"0190a000-0000-7000-8000-000000000002","version":1,"position":1,"occurred_at":"2026-11-25T20:12:44.123456Z","data":{}} {}`,
	} {
		_, err := outbox.DecodeMessage([]byte(body))
		require.Error(t, err, body)
	}
}
