package harness

import (
	"cmp"
	"context"
	"fmt"
	"os"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
)

// BrokerURL is the broker's URL (default vhost): EPOCH_AMQP_URL, as the
// binaries read it (broker.DefaultURL when it is not set).
func BrokerURL() string { return cmp.Or(os.Getenv("EPOCH_AMQP_URL"), broker.DefaultURL) }

// Vhost is a vhost of its own on the broker of BrokerURL, on which guest
// may do everything.
type Vhost struct {
	Admin *rabbitadmin.Client // the broker's management API
	Name  string
	URL   string // its AMQP URL
}

// NewVhost creates a vhost named prefix and a random suffix through the
// broker's management API (port 15672 on the broker's host, or
// EPOCH_RABBITMQ_MANAGEMENT_URL).
func NewVhost(ctx context.Context, prefix string) (*Vhost, error) {
	base, err := amqp.ParseURI(BrokerURL())
	if err != nil {
		return nil, fmt.Errorf("EPOCH_AMQP_URL: %w", err)
	}
	v := &Vhost{Admin: rabbitadmin.New(base), Name: prefix + RandomHex(6)}
	if err := v.Admin.Ready(ctx); err != nil {
		return nil, err
	}
	if v.URL, err = v.Admin.CreateVhost(ctx, base, v.Name); err != nil {
		// It may have come up in part.
		_ = v.Delete(context.WithoutCancel(ctx))
		return nil, err
	}
	return v, nil
}

// Delete deletes the vhost, with its queues and connections.
func (v *Vhost) Delete(ctx context.Context) error {
	if err := v.Admin.DeleteVhost(ctx, v.Name); err != nil {
		return fmt.Errorf("delete vhost %s: %w", v.Name, err)
	}
	return nil
}

// WithChannel runs fn on a channel of its own connection to amqpURL.
func WithChannel(amqpURL string, fn func(*amqp.Channel) error) error {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	return fn(ch)
}

// QueueMessages is a queue's ready messages on the broker (one node's URL)
// of amqpURL, exactly, from a passive declare (the management API's counts
// lag by seconds).
func QueueMessages(amqpURL, queue string) (n int, err error) {
	err = WithChannel(amqpURL, func(ch *amqp.Channel) (err error) {
		n, err = broker.Ready(ch, queue)
		return err
	})
	return n, err
}
