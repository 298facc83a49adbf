package testpgpair_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/testpgpair"
)

// The pair's URLs come from what `scripts/postgres-pair up` prints; output
// without them is refused with what it said.
func TestParseURLs(t *testing.T) {
	t.Parallel()
	got, err := testpgpair.ParseURLs([]byte("EPOCH_PG_PRIMARY_URL=postgres://p\nEPOCH_PG_STANDBY_URL=postgres://s\nEPOCH_DATABASE_URL=postgres://p,s\n"))
	require.NoError(t, err)
	require.Equal(t, testpgpair.URLs{Primary: "postgres://p", Standby: "postgres://s", Database: "postgres://p,s"}, got)
	_, err = testpgpair.ParseURLs([]byte("FAIL: initdb failed\n"))
	require.ErrorContains(t, err, "initdb failed")
}
