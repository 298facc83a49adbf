package deploy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/commandside/backpressure"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/catchup"
	"github.com/catacloud/epoch/internal/delivery/consumer"
	"github.com/catacloud/epoch/internal/delivery/heal"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/billing"
)

// homes is the home of each default a binary's setting shares with a
// package, by setting: the package's constant, which it applies to a zero
// field of its Config.
var homes = map[string]any{
	"DATABASE_URL":                database.DefaultURL,
	"AMQP_URL":                    broker.DefaultURL,
	"DB_TIMEOUT":                  httpapi.DefaultDBTimeout,
	"TOKEN_CACHE_TTL":             httpapi.DefaultTokenCacheTTL,
	"RABBITMQ_MANAGEMENT_TIMEOUT": httpapi.DefaultQueueTimeout,
	"PRICE_PER_GB_HOUR":           billing.DefaultPricePerGBHour,
	"CURRENCY":                    billing.DefaultCurrency,
	"BILLING_PERIOD":              billing.DefaultPeriod,
	"BILLING_TIMEZONE":            billing.DefaultTimezone,
	"MAX_WAITS_PER_USER":          catchup.DefaultMaxWaitsPerOwner,
	"OUTBOX_MAX_BACKLOG":          backpressure.DefaultMaxBacklog,
	"RELAY_BATCH_SIZE":            outbox.DefaultBatchSize,
	"RELAY_POLL_INTERVAL":         outbox.DefaultPollInterval,
	"RELAY_PARTITION_SHARE":       outbox.DefaultPartitionShare,
	"CONSUMER_PREFETCH":           consumer.DefaultPrefetch,
	"DELIVERY_LIMIT":              broker.DefaultDeliveryLimit,
	"HEAL_AFTER":                  heal.DefaultAfter,
}

// A binary's envconfig tag cannot name a constant, so it writes the value
// of a default again (for --help, and for the settings where 0 means off
// rather than the default): each such tag must say what its home says.
func TestDefaultsHaveOneHome(t *testing.T) {
	t.Parallel()
	found := map[string]bool{}
	for _, binary := range []string{"api", "worker"} {
		for setting, tag := range configDefaults(t, filepath.Join(root, "cmd", binary, "main.go")) {
			home, ok := homes[setting]
			if !ok {
				continue
			}
			found[setting] = true
			require.True(t, sameDefault(t, tag, home), "%s: EPOCH_%s's default tag says %q, its home %v", binary, setting, tag, home)
		}
	}
	for setting := range homes {
		require.True(t, found[setting], "no binary has the setting EPOCH_%s", setting)
	}
}

// configDefaults reads the default tag of each setting (by its envconfig
// name) of the config struct in a binary's main.go.
func configDefaults(t *testing.T, path string) map[string]string {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	require.NoError(t, err)
	defaults := map[string]string{}
	ast.Inspect(file, func(n ast.Node) bool {
		spec, ok := n.(*ast.TypeSpec)
		if !ok || spec.Name.Name != "config" {
			return true
		}
		for _, field := range spec.Type.(*ast.StructType).Fields.List {
			if field.Tag == nil {
				continue
			}
			raw, err := strconv.Unquote(field.Tag.Value)
			require.NoError(t, err)
			tag := reflect.StructTag(raw)
			defaults[tag.Get("envconfig")] = tag.Get("default")
		}
		return false
	})
	require.NotEmpty(t, defaults, "%s has no config", path)
	return defaults
}

// sameDefault reports whether tag, read as envconfig reads it, is home.
func sameDefault(t *testing.T, tag string, home any) bool {
	t.Helper()
	switch home := home.(type) {
	case time.Duration:
		d, err := time.ParseDuration(tag)
		return err == nil && d == home
	case int:
		n, err := strconv.Atoi(tag)
		return err == nil && n == home
	case float64:
		x, err := strconv.ParseFloat(tag, 64)
		return err == nil && x == home
	case string:
		return tag == home
	}
	t.Fatalf("a default of type %T is not compared", home)
	return false
}
