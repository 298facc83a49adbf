package migrate_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/ops/migrate"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// Upgrading a live database to 0003 keeps what waits in the outbox (each
// old row becomes a run of one event) and the job_files rows, still one per
// job and file.
func TestFanInMigrationKeepsQueuedEventsAndLinks(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.Empty(t)
	ctx := context.Background()
	applied, err := migrate.UpTo(ctx, pool, 2)
	require.NoError(t, err)
	require.Equal(t, 2, applied)

	// What the old schema holds: two queued events (one outbox row each)
	// and a link.
	job, file := uuid.New(), uuid.New()
	_, err = pool.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, version, type, data, occurred_at)
		VALUES ($1, 'job', $2, 1, 'job.created', '{}', now()), ($3, 'job', $2, 2, 'job.file_linked', '{}', now())`,
		uuid.New(), job, uuid.New())
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO outbox (position, partition) SELECT position, 5 FROM events`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO job_files (job_id, file_id, name, size_bytes, linked_position) VALUES ($1, $2, 'f', 7, 2)`, job, file)
	require.NoError(t, err)

	applied, err = migrate.UpTo(ctx, pool, 3)
	require.NoError(t, err)
	require.Equal(t, 1, applied)

	rows, err := pool.Query(ctx, "SELECT ARRAY[position, last_position] FROM outbox ORDER BY position")
	require.NoError(t, err)
	runs, err := pgx.CollectRows(rows, pgx.RowTo[[]int64])
	require.NoError(t, err)
	require.Len(t, runs, 2)
	for _, r := range runs {
		require.Equal(t, r[0], r[1], "an old row is a run of one event")
	}
	_, err = pool.Exec(ctx, `INSERT INTO job_files (job_id, file_id, name, size_bytes, linked_position) VALUES ($1, $2, 'f', 7, 3)`, job, file)
	require.True(t, database.IsUniqueViolation(err, "job_files_pkey"), "a second link of the same file: %v", err)
	_, err = pool.Exec(ctx, `INSERT INTO outbox (position, partition, last_position) VALUES (10, 1, 9)`)
	require.Error(t, err, "a run must not end before it starts")
}
