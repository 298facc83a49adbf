package harness_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// A failed run's process logs outlive the directory they were written in.
func TestKeepLogsCopiesTheProcessLogs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "api-abc.log"), []byte("the api said"), 0o644))
	kept, err := harness.KeepLogs(dir)
	require.NoError(t, err)
	require.NotEmpty(t, kept)
	t.Cleanup(func() { _ = os.RemoveAll(kept) })
	b, err := os.ReadFile(filepath.Join(kept, "api-abc.log"))
	require.NoError(t, err)
	require.Equal(t, "the api said", string(b))

	kept, err = harness.KeepLogs(t.TempDir())
	require.NoError(t, err)
	require.Empty(t, kept, "no logs, nothing kept")
}

// One reading of /metrics gives each series and each name summed over its
// labels; Sum picks the series whose labels match.
func TestMetricsBySeriesAndByName(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP epoch_consumer_processed_total x
# TYPE epoch_consumer_processed_total counter
epoch_consumer_processed_total{subscriber="billing"} 3
epoch_consumer_processed_total{subscriber="storage"} 4
epoch_consumer_batch_seconds_count{subscriber="billing"} 9
epoch_db_statements_total 42
`)
	}))
	t.Cleanup(srv.Close)
	m, err := harness.ReadMetrics(context.Background(), srv.Client(), srv.Listener.Addr().String())
	require.NoError(t, err)
	require.Equal(t, 3.0, m[`epoch_consumer_processed_total{subscriber="billing"}`])
	require.Equal(t, 7.0, m["epoch_consumer_processed_total"], "a name alone sums its series")
	require.Equal(t, 7.0, m.Sum("epoch_consumer_processed_total", ""))
	require.Equal(t, 4.0, m.Sum("epoch_consumer_processed_total", `subscriber="storage"`))
	require.Equal(t, 42.0, m.Sum("epoch_db_statements_total", ""))
	require.Zero(t, m.Sum("epoch_consumer", ""), "a name is whole, not a prefix")
}
