// Command worker runs Epoch's background roles: the outbox relay, which
// publishes committed events to RabbitMQ, and the remote subscribers
// (storage, billing), each consuming its own queue. It declares the
// RabbitMQ topology first (unless EPOCH_DECLARE_TOPOLOGY says another user
// does), serves /healthz, /readyz and /metrics, and stops
// gracefully on SIGTERM or SIGINT: unconfirmed outbox rows stay, unacked
// deliveries go back to their queues.
package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/process"
	"github.com/catacloud/epoch/internal/subscribers"
)

// config is the worker's environment (prefix EPOCH_). `worker --help` lists it.
// A default that a package uses is that package's exported constant; the
// tag repeats it (envconfig cannot name a constant), and internal/systemtest/deploy's
// TestDefaultsHaveOneHome keeps the two equal; TestDefaultsAreTheWorkers
// does for the worker's own (its roles, its topology values).
type config struct {
	DatabaseURL            string        `envconfig:"DATABASE_URL" default:"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" desc:"Postgres connection URL"`
	DBMaxConns             int32         `envconfig:"DB_MAX_CONNS" default:"10" desc:"most Postgres connections the worker opens"`
	AMQPURL                string        `envconfig:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/" desc:"RabbitMQ URL, or the comma-separated URLs of the nodes of one cluster (each connection uses a node that answers, and another when its node goes)"`
	HTTPAddr               string        `envconfig:"HTTP_ADDR" default:":8081" desc:"address of /healthz, /readyz and /metrics"`
	WorkerRoles            []string      `envconfig:"WORKER_ROLES" default:"relay,storage,billing" desc:"comma-separated roles to run: relay, storage, billing"`
	RelayBatchSize         int           `envconfig:"RELAY_BATCH_SIZE" default:"500" desc:"about the most events the relay publishes per cycle (it takes whole outbox rows, at least one per partition)"`
	RelayPollInterval      time.Duration `envconfig:"RELAY_POLL_INTERVAL" default:"1s" desc:"how often an idle relay looks at the outbox when no NOTIFY woke it"`
	RelayLanes             int           `envconfig:"RELAY_LANES" default:"2" desc:"publishing loops of the relay, each with its own RabbitMQ connection, working on disjoint partitions at once"`
	RelayPartitionShare    float64       `envconfig:"RELAY_PARTITION_SHARE" default:"0.5" desc:"most a relay takes of the outbox partitions with rows per cycle, in (0,1], so several relays split the work"`
	ConsumerPrefetch       int           `envconfig:"CONSUMER_PREFETCH" default:"1000" desc:"unacked deliveries a subscriber may hold; it applies them in batches of up to half that"`
	DeliveryLimit          int           `envconfig:"DELIVERY_LIMIT" default:"20" desc:"deliveries of a message whose event fails to apply before the worker keeps it as a dead letter (reason failed); also the queues' x-delivery-limit, past which RabbitMQ moves it to catacloud.<name>.dead"`
	DeclareTopology        string        `envconfig:"DECLARE_TOPOLOGY" default:"true" desc:"true: declare the RabbitMQ topology (exchange, queues, bindings) at start and on every subscriber reconnect, which needs configure rights; false: leave it to whoever declared it (a worker whose user may only publish or consume); only: declare it and exit, without Postgres or roles (a one-shot run as the topology's user)"`
	HealAfter              time.Duration `envconfig:"HEAL_AFTER" default:"30s" desc:"a subscriber this worker runs is handed, from the event store, the events of its types committed more than this long ago that it has not applied (a purged queue, messages the broker lost or keeps), every few seconds; an event whose own application failed is left to the operator"`
	StartupTimeout         time.Duration `envconfig:"STARTUP_TIMEOUT" default:"60s" desc:"how long start-up waits for RabbitMQ to declare the topology"`
	ShutdownTimeout        time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s" desc:"on SIGTERM, how long the roles and the HTTP server may take to stop"`
	Pprof                  bool          `envconfig:"PPROF" default:"false" desc:"serve /debug/pprof/ on HTTP_ADDR too"`
	PricePerGBHour         string        `envconfig:"PRICE_PER_GB_HOUR" default:"0.00003" desc:"price of one GB-hour (10^9 bytes for an hour), a decimal: the flat price (version 0) of the periods no price version prices; the billing role closes statements with it"`
	Currency               string        `envconfig:"CURRENCY" default:"USD" desc:"currency of that price (ISO 4217)"`
	BillingPeriod          string        `envconfig:"BILLING_PERIOD" default:"month" desc:"billing period: month (calendar months in EPOCH_BILLING_TIMEZONE) or a Go duration of at least 1s, counted from 1970-01-01T00:00:00Z; the api's must be the same"`
	BillingTimezone        string        `envconfig:"BILLING_TIMEZONE" default:"UTC" desc:"IANA time zone whose calendar months are the billing periods; the api's must be the same"`
	FaultCrashAfterConfirm float64       `envconfig:"FAULT_CRASH_AFTER_CONFIRM" default:"0" desc:"tests only: probability that the relay kills its own process (SIGKILL) after a batch is confirmed and before its rows are deleted"`
}

// Roles a worker can run: the relay and each movable subscriber, by its
// name.
const roleRelay = subscribers.RoleRelay

var knownRoles = subscribers.Roles()

// Values of EPOCH_DECLARE_TOPOLOGY.
const (
	declareAtStart = "true"
	declareNever   = "false"
	declareOnly    = "only"
)

func main() {
	process.Main("worker", "worker relays Epoch's outbox to RabbitMQ and runs the remote subscribers.", (*config).validate, run)
}

func (c *config) validate() error {
	if len(c.WorkerRoles) == 0 {
		return fmt.Errorf("EPOCH_WORKER_ROLES is empty: name at least one of %v", knownRoles)
	}
	for _, r := range c.WorkerRoles {
		if !slices.Contains(knownRoles, r) {
			return fmt.Errorf("EPOCH_WORKER_ROLES: unknown role %q (known: %v)", r, knownRoles)
		}
	}
	if c.FaultCrashAfterConfirm < 0 || c.FaultCrashAfterConfirm > 1 {
		return fmt.Errorf("EPOCH_FAULT_CRASH_AFTER_CONFIRM must be in [0,1], got %v", c.FaultCrashAfterConfirm)
	}
	if c.RelayLanes < 1 || c.RelayLanes > 16 {
		return fmt.Errorf("EPOCH_RELAY_LANES must be 1..16, got %d", c.RelayLanes)
	}
	if !slices.Contains([]string{declareAtStart, declareNever, declareOnly}, c.DeclareTopology) {
		return fmt.Errorf("EPOCH_DECLARE_TOPOLOGY must be true, false or only, got %q", c.DeclareTopology)
	}
	if c.HealAfter < 0 {
		return fmt.Errorf("EPOCH_HEAL_AFTER must not be negative, got %s", c.HealAfter)
	}
	if c.DeliveryLimit <= 0 {
		return fmt.Errorf("EPOCH_DELIVERY_LIMIT must be positive, got %d", c.DeliveryLimit)
	}
	if c.AMQPURL != "" {
		if _, err := broker.ParseURLs(c.AMQPURL); err != nil {
			return fmt.Errorf("EPOCH_AMQP_URL: %w", err)
		}
	}
	return nil
}
