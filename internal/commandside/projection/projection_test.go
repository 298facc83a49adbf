package projection_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/commandside/projection"
	"github.com/catacloud/epoch/internal/commandside/readmodel"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/ops/rebuild"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/operations"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

func newService(t testing.TB, pool *pgxpool.Pool) *command.Service {
	d, err := dispatch.New([]dispatch.Subscriber{projection.Subscriber{}}, nil, nil)
	require.NoError(t, err)
	return command.NewService(pool, d)
}

// snapshot renders the projection tables as ordered JSON rows.
func snapshot(t testing.TB, db database.DBTX) string {
	var b strings.Builder
	for _, q := range []string{
		"SELECT row_to_json(t)::text FROM (SELECT * FROM files ORDER BY id) t",
		"SELECT row_to_json(t)::text FROM (SELECT * FROM jobs ORDER BY id) t",
		"SELECT row_to_json(t)::text FROM (SELECT * FROM job_files ORDER BY job_id, file_id) t",
	} {
		rows, err := db.Query(context.Background(), q)
		require.NoError(t, err)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		b.WriteString(strings.Join(lines, "\n"))
		b.WriteString("\n--\n")
	}
	return b.String()
}

// After any sequence of commands, replaying the event store
// into empty projection tables gives exactly the live tables.
func TestRebuildEqualsLiveTables(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	svc := newService(t, pool)
	ctx := context.Background()

	rapid.Check(t, func(rt *rapid.T) {
		owners := []uuid.UUID{uuid.New(), uuid.New()}
		var files, jobs []uuid.UUID
		ownerOf := map[uuid.UUID]uuid.UUID{}
		pick := func(ids []uuid.UUID, label string) uuid.UUID {
			if len(ids) == 0 || rapid.IntRange(0, 9).Draw(rt, label+"_unknown") == 0 {
				return uuid.New() // sometimes an id nobody has
			}
			return rapid.SampledFrom(ids).Draw(rt, label)
		}
		steps := rapid.IntRange(1, 40).Draw(rt, "steps")
		for range steps {
			owner := rapid.SampledFrom(owners).Draw(rt, "owner")
			err := svc.Run(ctx, func(tx *database.Tx) error {
				switch rapid.IntRange(0, 6).Draw(rt, "command") {
				case 0:
					out, err := svc.UploadFile(ctx, tx, owner, command.UploadFile{
						Name: rapid.StringMatching(`[a-z]{1,8}\.bin`).Draw(rt, "name"), SizeBytes: rapid.Int64Range(0, 1<<40).Draw(rt, "size")})
					if err != nil {
						return err
					}
					f, err := readmodel.GetFile(ctx, tx, owner, out.ID)
					if err == nil {
						files, ownerOf[f.ID] = append(files, f.ID), owner
					}
					return err
				case 1:
					out, err := svc.CreateJob(ctx, tx, owner, "job")
					if err != nil {
						return err
					}
					j, err := readmodel.GetJob(ctx, tx, owner, out.ID)
					if err == nil {
						jobs, ownerOf[j.ID] = append(jobs, j.ID), owner
					}
					return err
				case 2:
					_, err := svc.LinkFile(ctx, tx, command.JobRef{OwnerID: owner, JobID: pick(jobs, "job")}, pick(files, "file"))
					return err
				case 3:
					_, err := svc.UnlinkFile(ctx, tx, command.JobRef{OwnerID: owner, JobID: pick(jobs, "job")}, pick(files, "file"))
					return err
				case 4:
					var want []uuid.UUID
					for _, f := range files {
						if ownerOf[f] == owner && rapid.Bool().Draw(rt, "include") {
							want = append(want, f)
						}
					}
					_, err := svc.SetJobFiles(ctx, tx, command.JobRef{OwnerID: owner, JobID: pick(jobs, "job")}, want)
					return err
				case 5:
					_, err := svc.DeleteFile(ctx, tx, owner, pick(files, "file"))
					return err
				default:
					_, err := svc.DeleteJob(ctx, tx, command.JobRef{OwnerID: owner, JobID: pick(jobs, "job")})
					return err
				}
			})
			if err != nil && !errors.Is(err, database.ErrNotFound) {
				rt.Fatalf("command failed: %v", err)
			}
		}

		live := snapshot(t, pool)
		held := testdb.Hold(t, pool) // the rebuild is only compared, never kept
		tx := held.Tx
		require.NoError(t, projection.Rebuild(ctx, tx))
		rebuilt := snapshot(t, tx)
		if live != rebuilt {
			rt.Fatalf("rebuilt projections differ from the live ones:\nlive:\n%s\nrebuilt:\n%s", live, rebuilt)
		}
		// The operator's verify, beside the live tables, agrees (once the
		// rebuild above, which holds the tables, is gone).
		require.NoError(t, held.Rollback())
		if _, differences := verify(t, pool, false); differences != 0 {
			rt.Fatalf("projection verify found %d differences after a sequence of commands", differences)
		}
	})
}

// verify runs the operator's projection rebuild (swap or not) and returns
// the events it replayed and the differences it found.
func verify(t *testing.T, pool *pgxpool.Pool, swap bool) (applied, differences int64) {
	t.Helper()
	p := &operations.Progress{}
	sub := projection.Subscriber{}
	require.NoError(t, rebuild.Run(context.Background(), pool,
		rebuild.Target{Tables: sub.Tables(), Apply: sub.Handle, Applied: rebuild.Projections}, swap, p))
	return p.Counts()
}

// A corrupted row is found by verify, left as it is, and repaired by a
// swap; commands landing meanwhile are kept.
func TestProjectionVerifyFindsAndSwapRepairs(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	svc := newService(t, pool)
	ctx := context.Background()
	owner := uuid.New()
	var ids []uuid.UUID
	for i := range 5 {
		require.NoError(t, svc.Run(ctx, func(tx *database.Tx) error {
			out, err := svc.UploadFile(ctx, tx, owner, command.UploadFile{Name: fmt.Sprintf("f%d", i), SizeBytes: int64(i + 1)})
			ids = append(ids, out.ID)
			return err
		}))
	}
	var j command.Outcome
	require.NoError(t, svc.Run(ctx, func(tx *database.Tx) (err error) {
		j, err = svc.CreateJob(ctx, tx, owner, "j")
		return err
	}))
	require.NoError(t, svc.Run(ctx, func(tx *database.Tx) error {
		_, err := svc.SetJobFiles(ctx, tx, command.JobRef{OwnerID: owner, JobID: j.ID}, ids)
		return err
	}))
	good := snapshot(t, pool)
	applied, differences := verify(t, pool, false)
	require.Zero(t, differences)
	require.Positive(t, applied)

	// Three rows corrupted: a file renamed, a link dropped, a job's count.
	_, err := pool.Exec(ctx, `UPDATE files SET name = 'forged' WHERE id = $1`, ids[0])
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `DELETE FROM job_files WHERE file_id = $1`, ids[1])
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE jobs SET file_count = 99 WHERE id = $1`, j.ID)
	require.NoError(t, err)
	corrupt := snapshot(t, pool)
	_, differences = verify(t, pool, false)
	require.EqualValues(t, 3, differences)
	require.Equal(t, corrupt, snapshot(t, pool), "verify alone changed the live tables")

	_, differences = verify(t, pool, true)
	require.EqualValues(t, 3, differences)
	require.Equal(t, good, snapshot(t, pool))
	_, differences = verify(t, pool, false)
	require.Zero(t, differences)
}

// Setting 1,000 files on a job costs as many statements as setting one.
func TestSetJobFilesStatementCountIsConstant(t *testing.T) {
	t.Parallel()
	_, url := testdb.New(t)
	counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "statements"})
	pool, err := database.Connect(context.Background(), url, 0, database.StatementCounter{Counter: counter})
	require.NoError(t, err)
	defer pool.Close()
	svc := newService(t, pool)
	ctx := context.Background()
	owner := uuid.New()

	// Upload the files outside the measurement.
	ids := make([]uuid.UUID, 1000)
	for i := range ids {
		require.NoError(t, svc.Run(ctx, func(tx *database.Tx) error {
			out, err := svc.UploadFile(ctx, tx, owner, command.UploadFile{Name: fmt.Sprintf("f%d", i), SizeBytes: int64(i)})
			ids[i] = out.ID
			return err
		}))
	}
	measure := func(fileIDs []uuid.UUID) (int64, readmodel.Job) {
		var job command.Outcome
		require.NoError(t, svc.Run(ctx, func(tx *database.Tx) (err error) {
			job, err = svc.CreateJob(ctx, tx, owner, "fan-in")
			return err
		}))
		before := testutil.ToFloat64(counter)
		var preview readmodel.Job
		require.NoError(t, svc.Run(ctx, func(tx *database.Tx) error {
			if _, err := svc.SetJobFiles(ctx, tx, command.JobRef{OwnerID: owner, JobID: job.ID}, fileIDs); err != nil {
				return err
			}
			tx.ReadAtCommit(func(db database.DBTX) (err error) {
				preview, err = readmodel.GetJob(ctx, db, owner, job.ID)
				return err
			})
			return nil
		}))
		return int64(testutil.ToFloat64(counter) - before), preview
	}
	one, _ := measure(ids[:1])
	thousand, preview := measure(ids)
	require.Len(t, *preview.Files, 1000)
	require.EqualValues(t, "499500", preview.TotalBytes)
	require.Equal(t, one, thousand, "statements for 1 file vs 1,000 files")
	t.Logf("SetJobFiles: %d statements for 1 file and for 1,000 files", one)
}
