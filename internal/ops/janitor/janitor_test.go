package janitor_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/ops/janitor"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

func TestSweepDeletesOnlyExpiredKeys(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	user := uuid.New()
	insert := func(key, age string) {
		_, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (user_id, key, request_hash, status, headers, body, created_at)
			VALUES ($1, $2, '\x00', 201, '{}', '\x00', now() - $3::interval)`, user, key, age)
		require.NoError(t, err)
	}
	// More than one batch of expired keys.
	_, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (user_id, key, request_hash, status, headers, body, created_at)
		SELECT $1, 'old-' || i, '\x00', 201, '{}', '\x00', now() - interval '25 hours' FROM generate_series(1, 12000) AS i`, user)
	require.NoError(t, err)
	insert("fresh", "23 hours")
	insert("edge", "24 hours 1 second")

	n, err := janitor.Sweep(ctx, pool)
	require.NoError(t, err)
	require.EqualValues(t, 12001, n)
	var left []string
	rows, err := pool.Query(ctx, "SELECT key FROM idempotency_keys")
	require.NoError(t, err)
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		left = append(left, k)
	}
	require.Equal(t, []string{"fresh"}, left)
}
