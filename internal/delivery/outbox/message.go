package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
)

// ContentType is the content type of every message body.
const ContentType = "application/json"

// occurredAtLayout is RFC 3339 with always six fractional digits: the
// microseconds Postgres keeps, which exact billing needs.
const occurredAtLayout = "2006-01-02T15:04:05.000000Z07:00"

// body is the message body of DESIGN.md's message contract.
type body struct {
	ID         uuid.UUID       `json:"id"`
	Type       string          `json:"type"`
	StreamType string          `json:"stream_type"`
	StreamID   uuid.UUID       `json:"stream_id"`
	Version    int32           `json:"version"`
	Position   int64           `json:"position"`
	OccurredAt string          `json:"occurred_at"`
	Data       json.RawMessage `json:"data"`
}

// MessageBody encodes an event as the body of its message.
func MessageBody(e eventstore.Event) ([]byte, error) {
	data := e.Data
	if len(bytes.TrimSpace(data)) == 0 {
		data = json.RawMessage("{}")
	}
	b, err := json.Marshal(body{
		ID:         e.ID,
		Type:       e.Type,
		StreamType: e.StreamType,
		StreamID:   e.StreamID,
		Version:    e.Version,
		Position:   e.Position,
		OccurredAt: e.OccurredAt.UTC().Format(occurredAtLayout),
		Data:       data,
	})
	if err != nil {
		return nil, fmt.Errorf("encode message of event %s: %w", e.ID, err)
	}
	return b, nil
}

// DecodeMessage decodes a message body made by MessageBody. It rejects a
// body that lacks what a subscriber needs to apply the event.
func DecodeMessage(b []byte) (eventstore.Event, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var m body
	if err := dec.Decode(&m); err != nil {
		return eventstore.Event{}, fmt.Errorf("decode message: %w", err)
	}
	if dec.More() {
		return eventstore.Event{}, errors.New("decode message: trailing data")
	}
	switch {
	case m.ID == uuid.Nil:
		return eventstore.Event{}, errors.New("decode message: no id")
	case m.Type == "":
		return eventstore.Event{}, errors.New("decode message: no type")
	case m.StreamID == uuid.Nil:
		return eventstore.Event{}, errors.New("decode message: no stream_id")
	case m.Version <= 0:
		return eventstore.Event{}, fmt.Errorf("decode message: version %d", m.Version)
	case m.Position <= 0:
		return eventstore.Event{}, fmt.Errorf("decode message: position %d", m.Position)
	case len(m.Data) == 0 || m.Data[0] != '{':
		return eventstore.Event{}, errors.New("decode message: data is not an object")
	}
	at, err := time.Parse(time.RFC3339Nano, m.OccurredAt)
	if err != nil {
		return eventstore.Event{}, fmt.Errorf("decode message: occurred_at: %w", err)
	}
	return eventstore.Event{
		ID:         m.ID,
		StreamType: m.StreamType,
		StreamID:   m.StreamID,
		Version:    m.Version,
		Type:       m.Type,
		Data:       m.Data,
		OccurredAt: at.UTC(),
		Position:   m.Position,
	}, nil
}

// Message is the AMQP message of an event: routing key and type are the
// event type, message_id its id, timestamp its occurred_at (whole seconds;
// the body keeps the microseconds). The publisher makes it persistent.
func Message(e eventstore.Event) (broker.Message, error) {
	b, err := MessageBody(e)
	if err != nil {
		return broker.Message{}, err
	}
	return broker.Message{
		RoutingKey: e.Type,
		Publishing: amqp.Publishing{
			ContentType:  ContentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    e.ID.String(),
			Type:         e.Type,
			Timestamp:    e.OccurredAt.UTC(),
			Body:         b,
		},
	}, nil
}
