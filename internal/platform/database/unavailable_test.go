package database_test

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// A server that is away is worth waiting for; one that answers that the
// database does not exist is not: start-up fails at once, naming it.
func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ping := func(raw string) error {
		pool, err := database.Connect(ctx, raw, 1, nil)
		require.NoError(t, err)
		defer pool.Close()
		return pool.Ping(ctx)
	}

	missing, err := url.Parse(testdb.ServerURL())
	require.NoError(t, err)
	missing.Path = "/no_such_database_here"
	err = ping(missing.String())
	require.Error(t, err)
	require.False(t, database.IsUnavailable(err), "%v", err)
	require.Contains(t, err.Error(), "no_such_database_here")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	away, err := url.Parse(testdb.ServerURL())
	require.NoError(t, err)
	away.Host = addr
	err = ping(away.String())
	require.Error(t, err)
	require.True(t, database.IsUnavailable(err), "%v", err)
}
