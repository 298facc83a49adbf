package testcluster_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/testcluster"
)

// The cluster's nodes come from the last line `scripts/rabbitmq-cluster up`
// prints; output without one is refused with what it said.
func TestURLs(t *testing.T) {
	t.Parallel()
	nodes := []string{"amqp://guest:guest@127.0.0.1:5681/", "amqp://guest:guest@127.0.0.1:5682/", "amqp://guest:guest@127.0.0.1:5683/"}
	got, err := testcluster.URLs([]byte("cluster up\nEPOCH_AMQP_URL=" + strings.Join(nodes, ",") + "\n"))
	require.NoError(t, err)
	require.Equal(t, nodes, got)
	_, err = testcluster.URLs([]byte("FAIL: rabbit_a@localhost: no pid file after 30s\n"))
	require.ErrorContains(t, err, "no pid file")
}
