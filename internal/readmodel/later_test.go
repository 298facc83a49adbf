package readmodel_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/readmodel"
	"github.com/catacloud/epoch/internal/testdb"
)

// A read queued with the COMMIT has its value once the transaction
// committed; one that finds nothing is not found, and does not fail the
// COMMIT it went with.
func TestLaterReadsGoWithTheCommit(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	owner, job, file := uuid.New(), uuid.New(), uuid.New()
	_, err := pool.Exec(ctx, `INSERT INTO jobs (id, owner_id, name, created_at, created_position, version, position) VALUES ($1, $2, 'j', now(), 1, 1, 1)`, job, owner)
	require.NoError(t, err)

	var preview, missingJob *readmodel.Later[readmodel.Job]
	var missingFile *readmodel.Later[readmodel.File]
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO job_files (job_id, file_id, name, size_bytes, linked_position) VALUES ($1, $2, 'f', 7, 2)`, job, file); err != nil {
			return err
		}
		var err error
		if preview, err = readmodel.GetJobLater(ctx, tx, owner, job); err != nil {
			return err
		}
		if missingJob, err = readmodel.GetJobLater(ctx, tx, uuid.New(), job); err != nil {
			return err
		}
		if missingFile, err = readmodel.GetFileLater(ctx, tx, owner, file); err != nil {
			return err
		}
		_, err = preview.Value()
		require.ErrorIs(t, err, readmodel.ErrNotRead)
		return nil
	}))
	got, err := preview.Value()
	require.NoError(t, err)
	require.Equal(t, job, got.ID)
	require.Equal(t, []readmodel.JobFile{{ID: file, Name: "f", SizeBytes: 7}}, *got.Files, "the read saw the transaction's own write")
	_, err = missingJob.Value()
	require.ErrorIs(t, err, database.ErrNotFound, "another owner's job")
	_, err = missingFile.Value()
	require.ErrorIs(t, err, database.ErrNotFound)
	var linked int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM job_files").Scan(&linked))
	require.Equal(t, 1, linked, "the transaction committed")
}
