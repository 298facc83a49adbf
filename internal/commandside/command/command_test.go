package command_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/commandside/projection"
	"github.com/catacloud/epoch/internal/commandside/readmodel"
	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

type fixture struct {
	svc  *command.Service
	pool *pgxpool.Pool
	url  string
}

// setup gives a test a command service on its own database, with the
// projections inline as in the api.
func setup(t *testing.T) fixture {
	t.Helper()
	pool, url := testdb.New(t)
	return fixture{svc: newService(t, pool), pool: pool, url: url}
}

func newService(t *testing.T, pool *pgxpool.Pool) *command.Service {
	t.Helper()
	d, err := dispatch.New([]dispatch.Subscriber{projection.Subscriber{}}, nil, nil)
	require.NoError(t, err)
	return command.NewService(pool, d)
}

func (f fixture) upload(t *testing.T, owner uuid.UUID, name string, size int64) readmodel.File {
	t.Helper()
	file, _, err := runFile(context.Background(), f.svc, owner, func(tx *database.Tx) (command.Outcome, error) {
		return f.svc.UploadFile(context.Background(), tx, owner, command.UploadFile{Name: name, SizeBytes: size})
	})
	require.NoError(t, err)
	return file
}

func (f fixture) createJob(t *testing.T, owner uuid.UUID, name string) readmodel.Job {
	t.Helper()
	job, _, err := runJob(context.Background(), f.svc, owner, func(tx *database.Tx) (command.Outcome, error) {
		return f.svc.CreateJob(context.Background(), tx, owner, name)
	})
	require.NoError(t, err)
	return job
}

func (f fixture) link(ctx context.Context, ref command.JobRef, file uuid.UUID) (readmodel.Job, command.Outcome, error) {
	return runJob(ctx, f.svc, ref.OwnerID, func(tx *database.Tx) (command.Outcome, error) {
		return f.svc.LinkFile(ctx, tx, ref, file)
	})
}

// runJob runs a job command and reads its answer with the COMMIT, as the
// api does.
func runJob(ctx context.Context, svc *command.Service, owner uuid.UUID, cmd func(tx *database.Tx) (command.Outcome, error)) (readmodel.Job, command.Outcome, error) {
	return run(ctx, svc, owner, cmd, readmodel.GetJob)
}

// runFile is runJob for a file command.
func runFile(ctx context.Context, svc *command.Service, owner uuid.UUID, cmd func(tx *database.Tx) (command.Outcome, error)) (readmodel.File, command.Outcome, error) {
	return run(ctx, svc, owner, cmd, readmodel.GetFile)
}

func run[T any](ctx context.Context, svc *command.Service, owner uuid.UUID, cmd func(tx *database.Tx) (command.Outcome, error),
	read func(context.Context, database.DBTX, uuid.UUID, uuid.UUID) (T, error)) (answer T, out command.Outcome, err error) {
	err = svc.Run(ctx, func(tx *database.Tx) (err error) {
		if out, err = cmd(tx); err != nil {
			return err
		}
		tx.ReadAtCommit(func(db database.DBTX) (err error) {
			answer, err = read(ctx, db, owner, out.ID)
			return err
		})
		return nil
	})
	return answer, out, err
}

func (f fixture) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, f.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

// waitForLock waits until a session of this test's database waits for a
// lock (of locktype, when not empty).
func (f fixture) waitForLock(t *testing.T, locktype, msg string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var waiting int
		err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
			WHERE NOT l.granted AND a.datname = current_database() AND ($1 = '' OR l.locktype = $1)`, locktype).Scan(&waiting)
		return err == nil && waiting > 0
	}, 10*time.Second, 10*time.Millisecond, msg)
}

func fileIDs(job readmodel.Job) []uuid.UUID {
	ids := make([]uuid.UUID, len(*job.Files))
	for i, f := range *job.Files {
		ids[i] = f.ID
	}
	return ids
}

// A link is visible to a read on another connection the moment
// the command returns, every time.
func TestReadYourWritesOnAnotherConnection(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner := uuid.New()
	job := f.createJob(t, owner, "render")

	reader, err := database.Connect(ctx, f.url, 1, nil)
	require.NoError(t, err)
	defer reader.Close()

	const n = 1000
	files := make([]readmodel.File, n)
	for i := range files {
		files[i] = f.upload(t, owner, fmt.Sprintf("frame-%04d.exr", i), int64(i))
	}
	stale := 0
	for i, file := range files {
		_, out, err := f.link(ctx, command.JobRef{OwnerID: owner, JobID: job.ID}, file.ID)
		require.NoError(t, err)
		var preview readmodel.Job
		require.NoError(t, database.Pipeline(ctx, reader, func(db *database.Conn) (err error) {
			preview, err = readmodel.GetJob(ctx, db, owner, job.ID)
			return err
		}))
		if len(*preview.Files) != i+1 || (*preview.Files)[i].ID != file.ID || preview.Position != out.Position {
			stale++
		}
	}
	require.Zero(t, stale, "previews that missed the file just linked")
}

// Concurrent links without If-Match all land, serialised into a
// gapless version sequence; with one shared If-Match exactly one lands.
func TestConcurrentLinks(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner := uuid.New()
	job := f.createJob(t, owner, "batch")
	const n = 50
	files := make([]readmodel.File, n)
	for i := range files {
		files[i] = f.upload(t, owner, fmt.Sprintf("f%d", i), 10)
	}

	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = f.link(ctx, command.JobRef{OwnerID: owner, JobID: job.ID}, files[i].ID)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	preview, err := readmodel.GetJob(ctx, f.pool, owner, job.ID)
	require.NoError(t, err)
	require.Len(t, *preview.Files, n)
	require.EqualValues(t, n+1, preview.Version)
	require.EqualValues(t, "500", preview.TotalBytes)
	rows, err := f.pool.Query(ctx, "SELECT version FROM events WHERE stream_id = $1 ORDER BY version", job.ID)
	require.NoError(t, err)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	require.NoError(t, err)
	for i, v := range versions {
		require.EqualValues(t, i+1, v)
	}
	require.Len(t, versions, n+1)

	// The same If-Match for everyone: one wins, the rest get a mismatch.
	job2 := f.createJob(t, owner, "guarded")
	version := job2.Version
	var won, mismatched atomic.Int32
	for i := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := f.link(ctx, command.JobRef{OwnerID: owner, JobID: job2.ID, IfMatch: &version}, files[i].ID)
			switch {
			case err == nil:
				won.Add(1)
			case errors.Is(err, command.ErrVersionMismatch):
				mismatched.Add(1)
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	require.EqualValues(t, 1, won.Load())
	require.EqualValues(t, n-1, mismatched.Load())
	var events int
	require.NoError(t, f.pool.QueryRow(ctx, "SELECT count(*) FROM events WHERE stream_id = $1", job2.ID).Scan(&events))
	require.Equal(t, 2, events, "job.created and the one link")
}

// Deleting a file takes it out of every job preview in the
// same transaction as its file.deleted.
func TestDeleteFileUnlinksEverywhere(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner := uuid.New()
	keep := f.upload(t, owner, "keep", 7)
	doomed := f.upload(t, owner, "doomed", 1000)
	var jobs []readmodel.Job
	for i := range 3 {
		job := f.createJob(t, owner, fmt.Sprintf("job%d", i))
		for _, file := range []readmodel.File{keep, doomed} {
			_, _, err := f.link(ctx, command.JobRef{OwnerID: owner, JobID: job.ID}, file.ID)
			require.NoError(t, err)
		}
		jobs = append(jobs, job)
	}
	var out command.Outcome
	require.NoError(t, f.svc.Run(ctx, func(tx *database.Tx) (err error) {
		out, err = f.svc.DeleteFile(ctx, tx, owner, doomed.ID)
		return err
	}))
	require.Equal(t, 4, out.Events, "three unlinks and the deletion")
	for _, job := range jobs {
		preview, err := readmodel.GetJob(ctx, f.pool, owner, job.ID)
		require.NoError(t, err)
		require.Equal(t, []uuid.UUID{keep.ID}, fileIDs(preview))
		require.EqualValues(t, 1, preview.FileCount)
		require.EqualValues(t, "7", preview.TotalBytes)
		require.EqualValues(t, 4, preview.Version)
	}
	_, err := readmodel.GetFile(ctx, f.pool, owner, doomed.ID)
	require.ErrorIs(t, err, database.ErrNotFound)

	// All four events were written by one transaction: one xid in the outbox.
	var xids int
	require.NoError(t, f.pool.QueryRow(ctx,
		"SELECT count(DISTINCT transaction_id::text) FROM outbox WHERE position > $1 - 4 AND position <= $1", out.Position).Scan(&xids))
	require.Equal(t, 1, xids)

	// A second delete, a link of the deleted file: not found, nothing written.
	before := f.count(t, "events")
	err = f.svc.Run(ctx, func(tx *database.Tx) error { _, err := f.svc.DeleteFile(ctx, tx, owner, doomed.ID); return err })
	require.ErrorIs(t, err, database.ErrNotFound)
	_, _, err = f.link(ctx, command.JobRef{OwnerID: owner, JobID: jobs[0].ID}, doomed.ID)
	require.ErrorIs(t, err, database.ErrNotFound)
	require.Equal(t, before, f.count(t, "events"))
}

// Linking a linked file, unlinking an unlinked one: no event, the job's
// position as the answer's position.
func TestNoOpCommandsWriteNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner := uuid.New()
	file := f.upload(t, owner, "a", 1)
	job := f.createJob(t, owner, "j")
	ref := command.JobRef{OwnerID: owner, JobID: job.ID}
	linked, out, err := f.link(ctx, ref, file.ID)
	require.NoError(t, err)
	require.Equal(t, 1, out.Events)

	before := f.count(t, "events")
	again, out2, err := f.link(ctx, ref, file.ID)
	require.NoError(t, err)
	require.Zero(t, out2.Events)
	require.Equal(t, linked.Position, out2.Position)
	require.Equal(t, linked, again)

	other := f.upload(t, owner, "b", 1)
	before = f.count(t, "events")
	unlinked, out2, err := runJob(ctx, f.svc, owner, func(tx *database.Tx) (command.Outcome, error) {
		return f.svc.UnlinkFile(ctx, tx, ref, other.ID)
	})
	require.NoError(t, err)
	require.Zero(t, out2.Events)
	require.Equal(t, []uuid.UUID{file.ID}, fileIDs(unlinked))
	require.Equal(t, before, f.count(t, "events"))

	// If-Match with a stale version fails even though nothing would change.
	stale := job.Version
	_, _, err = f.link(ctx, command.JobRef{OwnerID: owner, JobID: job.ID, IfMatch: &stale}, file.ID)
	require.ErrorIs(t, err, command.ErrVersionMismatch)

	// Another owner's job and file are not found.
	stranger := uuid.New()
	_, _, err = f.link(ctx, command.JobRef{OwnerID: stranger, JobID: job.ID}, file.ID)
	require.ErrorIs(t, err, database.ErrNotFound)
	theirs := f.createJob(t, stranger, "theirs")
	_, _, err = f.link(ctx, command.JobRef{OwnerID: stranger, JobID: theirs.ID}, file.ID)
	require.ErrorIs(t, err, database.ErrNotFound)
	require.Equal(t, before+1, f.count(t, "events"), "only the stranger's job.created")
}

// SetJobFiles keeps the order of links, unlinks what is left out, and
// rejects duplicates, missing files and too many files without writing.
func TestSetJobFiles(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner := uuid.New()
	a, b, c := f.upload(t, owner, "a", 1), f.upload(t, owner, "b", 2), f.upload(t, owner, "c", 4)
	job := f.createJob(t, owner, "j")
	ref := command.JobRef{OwnerID: owner, JobID: job.ID}
	set := func(ids ...uuid.UUID) (readmodel.Job, command.Outcome, error) {
		return runJob(ctx, f.svc, owner, func(tx *database.Tx) (command.Outcome, error) {
			return f.svc.SetJobFiles(ctx, tx, ref, ids)
		})
	}
	preview, out, err := set(c.ID, a.ID)
	require.NoError(t, err)
	require.Equal(t, 2, out.Events)
	require.Equal(t, []uuid.UUID{c.ID, a.ID}, fileIDs(preview))

	preview, out, err = set(b.ID, a.ID)
	require.NoError(t, err)
	require.Equal(t, 2, out.Events, "unlink c, link b")
	require.Equal(t, []uuid.UUID{a.ID, b.ID}, fileIDs(preview), "a kept its place, b linked after it")
	require.EqualValues(t, "3", preview.TotalBytes)

	before := f.count(t, "events")
	_, _, err = set(a.ID, a.ID)
	var invalid *command.InvalidError
	require.ErrorAs(t, err, &invalid)
	first, second := uuid.New(), uuid.New()
	_, _, err = set(a.ID, first, b.ID, second)
	require.ErrorIs(t, err, database.ErrNotFound)
	var missing *command.NotFoundError
	require.ErrorAs(t, err, &missing)
	require.Equal(t, first, missing.ID, "the first missing id in the order given")
	tooMany := make([]uuid.UUID, domain.MaxJobFiles+1)
	for i := range tooMany {
		tooMany[i] = uuid.New()
	}
	_, _, err = set(tooMany...)
	require.ErrorIs(t, err, command.ErrJobFileLimit)
	preview, out, err = set()
	require.NoError(t, err)
	require.Empty(t, *preview.Files)
	require.EqualValues(t, "0", preview.TotalBytes)
	require.Equal(t, before+2, f.count(t, "events"))
}

// A file deletion and the job commands that name the file serialise on the
// file's lock, whichever comes first: a deletion waits for a link in flight
// and then unlinks it; a link that starts during a deletion waits and then
// finds the file gone. No job keeps a deleted file.
func TestDeleteFileAndLinkSerialise(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner := uuid.New()
	job := f.createJob(t, owner, "job")
	ref := command.JobRef{OwnerID: owner, JobID: job.ID}
	deleteFile := func(id uuid.UUID) error {
		return f.svc.Run(ctx, func(tx *database.Tx) error { _, err := f.svc.DeleteFile(ctx, tx, owner, id); return err })
	}

	// A link in flight, then a deletion: the deletion waits, then unlinks.
	first := f.upload(t, owner, "first", 10)
	held := testdb.Hold(t, f.pool)
	tx := held.Tx
	_, err := f.svc.LinkFile(ctx, tx, ref, first.ID)
	require.NoError(t, err)
	deleted := make(chan error, 1)
	go func() { deleted <- deleteFile(first.ID) }()
	f.waitForLock(t, "advisory", "nobody waits for the file lock")
	require.NoError(t, held.Commit())
	require.NoError(t, <-deleted)
	preview, err := readmodel.GetJob(ctx, f.pool, owner, job.ID)
	require.NoError(t, err)
	require.Empty(t, *preview.Files)
	require.EqualValues(t, 0, preview.FileCount)
	require.EqualValues(t, 3, preview.Version, "created, linked, unlinked by the deletion")

	// A deletion in flight, then a link: the link waits, then is not found.
	second := f.upload(t, owner, "second", 20)
	held = testdb.Hold(t, f.pool)
	tx = held.Tx
	_, err = f.svc.DeleteFile(ctx, tx, owner, second.ID)
	require.NoError(t, err)
	linked := make(chan error, 1)
	go func() { _, _, err := f.link(ctx, ref, second.ID); linked <- err }()
	f.waitForLock(t, "advisory", "nobody waits for the file lock")
	require.NoError(t, held.Commit())
	require.ErrorIs(t, <-linked, database.ErrNotFound)
	require.Equal(t, 0, f.count(t, "job_files"))
}

// Deletions of files under different file locks do not wait for each
// other, even of one owner: the locks are per file (one of 64), not per
// owner.
func TestDeletionsOfOtherFilesDoNotWait(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner := uuid.New()
	first := f.upload(t, owner, "first", 1)
	var second readmodel.File
	for i := 0; ; i++ {
		second = f.upload(t, owner, fmt.Sprintf("second-%d", i), 1)
		if command.FileLock(second.ID) != command.FileLock(first.ID) {
			break
		}
	}
	held := testdb.Hold(t, f.pool)
	tx := held.Tx
	_, err := f.svc.DeleteFile(ctx, tx, owner, first.ID)
	require.NoError(t, err)

	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = f.svc.Run(waitCtx, func(tx *database.Tx) error { _, err := f.svc.DeleteFile(waitCtx, tx, owner, second.ID); return err })
	require.NoError(t, err, "the second deletion waited for the first")
	require.NoError(t, held.Commit())
	// Files uploaded while looking for a second lock stay: count the two.
	var left int
	require.NoError(t, f.pool.QueryRow(ctx, "SELECT count(*) FROM files WHERE id = ANY($1)",
		[]uuid.UUID{first.ID, second.ID}).Scan(&left))
	require.Zero(t, left, "both deletions committed")
}

// A set that drops a file (without naming it) and the file's deletion, at
// once: the deletion waits for the job, then unlinks the file only from the
// jobs that still have it. The job's stream never unlinks a file twice.
func TestDeleteFileAfterASetDroppedIt(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner := uuid.New()
	job := f.createJob(t, owner, "job")
	ref := command.JobRef{OwnerID: owner, JobID: job.ID}
	doomed := f.upload(t, owner, "doomed", 10)
	_, _, err := f.link(ctx, ref, doomed.ID)
	require.NoError(t, err)

	held := testdb.Hold(t, f.pool)
	tx := held.Tx
	_, err = f.svc.SetJobFiles(ctx, tx, ref, []uuid.UUID{})
	require.NoError(t, err)
	deleted := make(chan error, 1)
	go func() {
		deleted <- f.svc.Run(ctx, func(tx *database.Tx) error { _, err := f.svc.DeleteFile(ctx, tx, owner, doomed.ID); return err })
	}()
	f.waitForLock(t, "", "the deletion does not wait for the job")
	require.NoError(t, held.Commit())
	require.NoError(t, <-deleted)

	rows, err := f.pool.Query(ctx, "SELECT type FROM events WHERE stream_id = $1 ORDER BY version", job.ID)
	require.NoError(t, err)
	types, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"job.created", "job.file_linked", "job.file_unlinked"}, types)
}

// A command's answer is read back with its COMMIT: an upload is two round
// trips and a link three (the relays' wake-up follows the COMMIT in its
// round trip), and the answer still shows the command's writes.
func TestAnswersAreReadWithTheCommit(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	rec := &testdb.Trips{Name: testdb.StatementName}
	svc := newService(t, testdb.Traced(t, f.pool, rec))
	owner := uuid.New()
	job := f.createJob(t, owner, "j")

	file, _, err := runFile(ctx, svc, owner, func(tx *database.Tx) (command.Outcome, error) {
		return svc.UploadFile(ctx, tx, owner, command.UploadFile{Name: "a.bin", SizeBytes: 7})
	})
	require.NoError(t, err)
	require.Equal(t, "a.bin", file.Name)
	require.Equal(t, [][]string{
		{"BEGIN", "EventAppend"},
		{"ProjectionFilesUploaded", "OutboxInsert", "FileGet", "COMMIT", "OutboxWake"},
	}, rec.Take())

	preview, out, err := runJob(ctx, svc, owner, func(tx *database.Tx) (command.Outcome, error) {
		return svc.LinkFile(ctx, tx, command.JobRef{OwnerID: owner, JobID: job.ID}, file.ID)
	})
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{file.ID}, fileIDs(preview))
	require.Equal(t, out.Position, preview.Position)
	require.Equal(t, [][]string{
		{"BEGIN", "JobLockForUpdate", "JobFileLinkedIDs", "FilesForLink"},
		{"EventAppend"},
		{"ProjectionJobFilesLinked", "OutboxInsert", "JobGet", "JobFileList", "COMMIT", "OutboxWake"},
	}, rec.Take())

	// The read runs once, at the commit: not before the command's function
	// returned, and not again.
	reads := 0
	require.NoError(t, svc.Run(ctx, func(tx *database.Tx) error {
		_, err := svc.UnlinkFile(ctx, tx, command.JobRef{OwnerID: owner, JobID: job.ID}, file.ID)
		require.NoError(t, err)
		tx.ReadAtCommit(func(db database.DBTX) error {
			reads++
			_, err := readmodel.GetJob(ctx, db, owner, job.ID)
			return err
		})
		require.Zero(t, reads)
		return nil
	}))
	require.Equal(t, 1, reads)
}
