package outbox

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// A claim reads the oldest rows of each partition it locked, and only
// those. Left to choose, the planner walked outbox_pkey in position order
// and dropped every other partition's rows on the way, once statistics
// from an earlier backlog of a few streams' rows (a burst of commands on a
// few jobs, analyzed, then relayed away) made one partition look like
// most of the table: each claim then read a good part of the backlog.
func TestClaimReadsOnlyItsPartitionsAfterABacklogOfFewStreams(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	exec := func(sql string) {
		t.Helper()
		_, err := pool.Exec(ctx, sql)
		require.NoError(t, err)
	}
	const traceparent = `'00-' || md5(g::text) || '-' || left(md5(g::text), 16) || '-01'`
	// The earlier backlog: most rows in one partition, the rest in a few.
	exec(`INSERT INTO outbox (position, partition, last_position, traceparent)
		SELECT g, CASE WHEN g <= 15000 THEN 3 WHEN g <= 30000 THEN g % 8 ELSE g % 28 END, g, ` + traceparent + `
		FROM generate_series(1, 50000) AS g`)
	exec("ANALYZE outbox")
	exec("DELETE FROM outbox")
	exec("VACUUM outbox")
	// Now a backlog of many files' events, one row each, in every
	// partition (a hash of the position stands in for the stream's).
	const backlog = 100000
	exec(`INSERT INTO events (id, stream_type, stream_id, version, type, data, occurred_at)
		SELECT gen_random_uuid(), 'file', gen_random_uuid(), 1, 'file.uploaded', '{}', now()
		FROM generate_series(1, 100000)`)
	exec(`INSERT INTO outbox (position, partition, last_position, traceparent)
		SELECT g, (hashint8(g) & 63)::smallint, g, ` + traceparent + `
		FROM (SELECT position AS g FROM events) AS e`)

	indexReads := func() (pkey, partitionIndex int64) {
		t.Helper()
		require.NoError(t, pool.QueryRow(ctx, `SELECT
			coalesce(sum(idx_tup_read) FILTER (WHERE indexrelname = 'outbox_pkey'), 0),
			coalesce(sum(idx_tup_read) FILTER (WHERE indexrelname = 'outbox_partition_position_idx'), 0)
			FROM pg_stat_user_indexes WHERE relname = 'outbox'`).Scan(&pkey, &partitionIndex))
		return pkey, partitionIndex
	}
	pkeyBefore, partitionBefore := indexReads()

	// Claims as the relay's cycle makes them, more than the five after
	// which Postgres may keep a generic plan, each in its own transaction.
	const batch = 500
	q := dbsqlc.New()
	claimed := 0
	for range 8 {
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error {
			q.OutboxPreferIndexes(ctx, tx, []string{"off"})
			lock := q.OutboxPartitionsLock(ctx, tx, []*dbsqlc.OutboxPartitionsLockParams{{
				PartitionCount: Partitions, LockKey: relayLockKey, Share: 0.5,
			}})
			claim := q.OutboxClaim(ctx, tx, []*dbsqlc.OutboxClaimParams{{LockKey: relayLockKey, BatchSize: batch}})
			locked, err := database.Many(lock)
			if err != nil {
				return err
			}
			rows, err := database.Many(claim)
			if err != nil {
				return err
			}
			require.Len(t, locked, Partitions/2)
			require.GreaterOrEqual(t, len(rows), batch)
			claimed += len(rows)
			return nil
		}))
	}

	// Backends report their index reads within about a second of going idle.
	var pkeyRead, partitionRead int64
	require.Eventually(t, func() bool {
		pkey, partition := indexReads()
		pkeyRead, partitionRead = pkey-pkeyBefore, partition-partitionBefore
		return partitionRead >= int64(claimed) || pkeyRead > 0
	}, 10*time.Second, 200*time.Millisecond, "no index reads of the claims reached pg_stat_user_indexes")
	require.Zero(t, pkeyRead, "the claims walked outbox_pkey (%d index entries read for %d rows claimed of %d)", pkeyRead, claimed, backlog)
	require.Less(t, partitionRead, int64(2*claimed), "the claims read more of the partitions than they took")
}
