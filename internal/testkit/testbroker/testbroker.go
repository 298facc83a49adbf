// Package testbroker gives each test its own vhost on the real RabbitMQ, so
// broker tests run in parallel and twice in a row. The broker comes from
// EPOCH_AMQP_URL (default: the local one); its management HTTP API (port
// 15672 on the same host, or EPOCH_RABBITMQ_MANAGEMENT_URL) creates and
// deletes the vhosts. A test fails, never skips, when the broker cannot be
// reached. No test stops or restarts the machine's broker: faults of a
// whole node are injected on the cluster tests' own nodes
// (internal/systemtest/clustertest), so broker tests never wait for each other.
package testbroker

import (
	"context"
	"os/exec"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// ServerURL is the broker's URL (default vhost): EPOCH_AMQP_URL, as the
// binaries read it (broker.DefaultURL when it is not set).
func ServerURL() string { return harness.BrokerURL() }

// New creates a fresh vhost for t (guest has full permissions on it) and
// deletes it when t ends. It returns the vhost's AMQP URL.
func New(t testing.TB) string {
	t.Helper()
	return newVhost(t)
}

// Vhost returns the vhost of an AMQP URL made by New.
func Vhost(t testing.TB, amqpURL string) string {
	t.Helper()
	u, err := amqp.ParseURI(amqpURL)
	if err != nil {
		t.Fatalf("testbroker: parse %s: %v", amqpURL, err)
	}
	return u.Vhost
}

// CloseConnections closes every client connection of the vhost, the way an
// operator's `rabbitmqctl close_all_connections` does, without touching
// other tests' vhosts.
func CloseConnections(t testing.TB, amqpURL string) {
	t.Helper()
	rabbitmqctl(t, "close_all_connections", "-p", Vhost(t, amqpURL), "testbroker: closed by test")
}

func rabbitmqctl(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testbroker: rabbitmqctl %v: %v\n%s", args, err, out)
	}
}

func newVhost(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := harness.NewVhost(ctx, "epoch_test_")
	if err != nil {
		t.Fatalf("testbroker: %v", err)
	}
	t.Cleanup(func() {
		// The vhost goes with its queues and connections.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := v.Delete(ctx); err != nil {
			t.Logf("testbroker: %v", err)
		}
	})
	return v.URL
}
