package command

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/commandside/backpressure"
	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/backoff"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// maxAttempts bounds Run's retries. Commands on one job are serialised by a
// row lock, so a retry is needed only after a deadlock with a file deletion
// or a version taken by a writer that did not lock.
const maxAttempts = 10

// Between attempts Run backs off (backoff.Exponential) from
// minConflictBackoff up to maxConflictBackoff, so colliders spread out.
const (
	minConflictBackoff = time.Millisecond
	maxConflictBackoff = 100 * time.Millisecond
)

// Service runs commands. Each method takes the caller's transaction; Run
// supplies one and retries it on conflicts.
type Service struct {
	pool       *pgxpool.Pool
	dispatcher *dispatch.Dispatcher
	gate       *backpressure.Gate
}

// NewService makes a Service writing through pool and dispatching to d.
func NewService(pool *pgxpool.Pool, d *dispatch.Dispatcher) *Service {
	return &Service{pool: pool, dispatcher: d}
}

// Inline names the movable subscribers this service runs in the command's
// transaction (the others run in the workers).
func (s *Service) Inline() []string { return s.dispatcher.Inline() }

// HoldBackWith makes Run wait at gate before each command (nil: never):
// in the api, the gate that holds commands back while the relay is behind.
func (s *Service) HoldBackWith(gate *backpressure.Gate) { s.gate = gate }

// Run runs fn in a transaction and commits it; on a version conflict,
// deadlock, serialization failure or ErrConflict it runs fn again in a new
// transaction, so concurrent commands on one job all land. It is the one
// retry loop of a command. fn may therefore run more than once and must not
// have effects outside the transaction; what it reads for its answer it
// reads with the COMMIT (Tx.ReadAtCommit), once per attempt.
func (s *Service) Run(ctx context.Context, fn func(tx *database.Tx) error) error {
	release, err := s.gate.Enter(ctx)
	if err != nil {
		return err
	}
	defer release()
	again := backoff.New(minConflictBackoff, maxConflictBackoff)
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		err = database.InTx(ctx, s.pool, fn)
		if err == nil || !(errors.Is(err, eventstore.ErrConcurrency) || errors.Is(err, ErrConflict) || database.IsTransient(err)) {
			return err
		}
		if attempt == maxAttempts {
			break
		}
		if !backoff.Sleep(ctx, again.Next()) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("command gave up after %d conflicts: %w", maxAttempts, err)
}

// UploadFile stores a new file of owner; Outcome.ID is its id.
func (s *Service) UploadFile(ctx context.Context, tx *database.Tx, owner uuid.UUID, in UploadFile) (Outcome, error) {
	id := uuid.Must(uuid.NewV7())
	changes, err := domain.NewFile(id, owner, in.Name, in.SizeBytes, in.ContentType)
	if err != nil {
		return Outcome{}, err
	}
	return s.write(ctx, tx, id, changes, map[uuid.UUID]int32{id: 0})
}

// DeleteFile deletes owner's file and unlinks it from every job that has
// it, in one transaction.
func (s *Service) DeleteFile(ctx context.Context, tx *database.Tx, owner, fileID uuid.UUID) (Outcome, error) {
	q := dbsqlc.New()
	// The lock, then the jobs it keeps from gaining the file, in one round
	// trip.
	lock := q.FileLockForUpdate(ctx, tx, []*dbsqlc.FileLockForUpdateParams{{ID: fileID, OwnerID: owner, FileLock: FileLock(fileID)}})
	withFile := q.JobIDsWithFile(ctx, tx, []uuid.UUID{fileID})
	file, err := database.One(lock)
	if err != nil {
		return Outcome{}, err
	}
	jobIDs, err := database.Many(withFile)
	if err != nil {
		return Outcome{}, err
	}
	versions := map[uuid.UUID]int32{fileID: file.Version}
	if len(jobIDs) > 0 {
		jobs, err := q.JobLockManyForUpdate(ctx, tx, jobIDs)
		if err != nil {
			return Outcome{}, err
		}
		for _, j := range jobs {
			versions[j.ID] = j.Version
		}
		// Read again now that the jobs are locked: a set that dropped the
		// file without naming it (so without its file lock) may have
		// committed while this waited for its job. No job can gain the file
		// meanwhile: linking it needs the file lock this holds.
		if jobIDs, err = database.Many(q.JobIDsWithFile(ctx, tx, []uuid.UUID{fileID})); err != nil {
			return Outcome{}, err
		}
	}
	return s.write(ctx, tx, fileID, domain.DeleteFile(fileID, owner, jobIDs), versions)
}

// CreateJob creates an empty job of owner; Outcome.ID is its id.
func (s *Service) CreateJob(ctx context.Context, tx *database.Tx, owner uuid.UUID, name string) (Outcome, error) {
	id := uuid.Must(uuid.NewV7())
	changes, err := domain.NewJob(id, owner, name)
	if err != nil {
		return Outcome{}, err
	}
	return s.write(ctx, tx, id, changes, map[uuid.UUID]int32{id: 0})
}

// DeleteJob deletes a job; its files stay.
func (s *Service) DeleteJob(ctx context.Context, tx *database.Tx, ref JobRef) (Outcome, error) {
	job, err := database.One(lockJob(ctx, tx, ref, nil))
	if err != nil {
		return Outcome{}, err
	}
	if err := checkIfMatch(ref, job); err != nil {
		return Outcome{}, err
	}
	return s.write(ctx, tx, job.ID, domain.DeleteJob(job.ID), map[uuid.UUID]int32{job.ID: job.Version})
}

// LinkFile attaches one of the owner's files to the job; linking a linked
// file writes nothing.
func (s *Service) LinkFile(ctx context.Context, tx *database.Tx, ref JobRef, fileID uuid.UUID) (Outcome, error) {
	return s.setFilesDelta(ctx, tx, ref, []uuid.UUID{fileID}, true)
}

// UnlinkFile detaches one of the owner's files from the job; unlinking a
// file that is not linked writes nothing.
func (s *Service) UnlinkFile(ctx context.Context, tx *database.Tx, ref JobRef, fileID uuid.UUID) (Outcome, error) {
	return s.setFilesDelta(ctx, tx, ref, []uuid.UUID{fileID}, false)
}

// setFilesDelta links (link true) or unlinks the given files of the owner,
// skipping those already in the wanted state.
func (s *Service) setFilesDelta(ctx context.Context, tx *database.Tx, ref JobRef, fileIDs []uuid.UUID, link bool) (Outcome, error) {
	var linkedIDs []uuid.UUID
	job, files, err := lockJobAndRead(ctx, tx, ref, fileIDs, func() func() error {
		links := dbsqlc.New().JobFileLinkedIDs(ctx, tx, []*dbsqlc.JobFileLinkedIDsParams{{JobID: ref.JobID, FileIds: fileIDs}})
		return func() (err error) { linkedIDs, err = database.Many(links); return err }
	})
	if err != nil {
		return Outcome{}, err
	}
	read, err := files.highest()
	if err != nil {
		return Outcome{}, err
	}
	isLinked := make(map[uuid.UUID]bool, len(linkedIDs))
	for _, id := range linkedIDs {
		isLinked[id] = true
	}
	var changes []domain.Change
	for _, id := range fileIDs {
		if link {
			changes = append(changes, domain.Link(job.ID, id, isLinked[id])...)
		} else {
			changes = append(changes, domain.Unlink(job.ID, id, isLinked[id])...)
		}
	}
	// Only new links count: a link that changes nothing answers as usual,
	// even on a full job.
	if link && len(changes) > 0 && job.FileCount+int64(len(changes)) > domain.MaxJobFiles {
		return Outcome{}, ErrJobFileLimit
	}
	return s.writeJob(ctx, tx, job, changes, max(read, job.Position))
}

// SetJobFiles makes the job's files exactly fileIDs (at most
// domain.MaxJobFiles, no duplicates): it unlinks the files not listed, then
// links the new ones in the order given. The number of statements does not
// grow with the number of files.
func (s *Service) SetJobFiles(ctx context.Context, tx *database.Tx, ref JobRef, fileIDs []uuid.UUID) (Outcome, error) {
	// The job ends up with exactly these files, whatever it holds now, so
	// too many is known before anything is read or locked.
	if len(fileIDs) > domain.MaxJobFiles {
		return Outcome{}, ErrJobFileLimit
	}
	var linked []uuid.UUID
	job, files, err := lockJobAndRead(ctx, tx, ref, fileIDs, func() func() error {
		links := dbsqlc.New().JobFileIDsInLinkOrder(ctx, tx, []uuid.UUID{ref.JobID})
		return func() (err error) { linked, err = database.Many(links); return err }
	})
	if err != nil {
		return Outcome{}, err
	}
	changes, err := domain.SetFiles(job.ID, linked, fileIDs)
	if err != nil {
		return Outcome{}, err
	}
	read, err := files.highest()
	if err != nil {
		return Outcome{}, err
	}
	return s.writeJob(ctx, tx, job, changes, max(read, job.Position))
}

// writeJob writes a job command's changes, if any. readPosition is the
// answer's position when nothing was written.
func (s *Service) writeJob(ctx context.Context, tx *database.Tx, job *dbsqlc.JobLockForUpdateRow, changes []domain.Change, readPosition int64) (Outcome, error) {
	if len(changes) == 0 {
		return Outcome{ID: job.ID, Position: readPosition}, nil
	}
	return s.write(ctx, tx, job.ID, changes, map[uuid.UUID]int32{job.ID: job.Version})
}

// write turns changes into events with the next versions of their streams
// (versions holds each stream's current version), appends them, runs the
// inline subscribers and queues the outbox rows. id is the Outcome's.
func (s *Service) write(ctx context.Context, tx *database.Tx, id uuid.UUID, changes []domain.Change, versions map[uuid.UUID]int32) (Outcome, error) {
	// The zero time: Append takes the database's clock, one for every
	// api process, inside the transaction.
	var at time.Time
	events := make([]eventstore.Event, len(changes))
	for i, c := range changes {
		versions[c.StreamID]++
		e, err := eventstore.New(c.StreamType, c.StreamID, versions[c.StreamID], c.Type, c.Data, at)
		if err != nil {
			return Outcome{}, err
		}
		events[i] = e
	}
	if err := eventstore.Append(ctx, tx, events); err != nil {
		return Outcome{}, err
	}
	if err := s.dispatcher.Dispatch(ctx, tx, events); err != nil {
		return Outcome{}, err
	}
	return Outcome{ID: id, Position: events[len(events)-1].Position, Events: len(events)}, nil
}

// lockJob queues the statement that locks the owner's job for the rest of
// the transaction, so commands on one job run one after another; its row
// is database.ErrNotFound when the owner has no such job. First it takes
// the file locks of fileIDs shared, which file deletion takes exclusive:
// they, not a row lock per file, keep the command's files from being
// deleted under it.
func lockJob(ctx context.Context, tx *database.Tx, ref JobRef, fileIDs []uuid.UUID) *dbsqlc.JobLockForUpdateBatchResults {
	return dbsqlc.New().JobLockForUpdate(ctx, tx, []*dbsqlc.JobLockForUpdateParams{{ID: ref.JobID, OwnerID: ref.OwnerID, FileLocks: fileLocks(fileIDs)}})
}

// checkIfMatch checks If-Match against the locked job: a mismatch fails
// even a command that would change nothing.
func checkIfMatch(ref JobRef, job *dbsqlc.JobLockForUpdateRow) error {
	if ref.IfMatch != nil && *ref.IfMatch != job.Version {
		return ErrVersionMismatch
	}
	return nil
}

// lockJobAndRead locks the owner's job (lockJob), then reads its links
// (links queues their read and returns how to read it) and the owner's
// files named, all in one round trip, and checks If-Match. The files are
// read without row locks: the file locks lockJob took keep them from being
// deleted until the command commits.
func lockJobAndRead(ctx context.Context, tx *database.Tx, ref JobRef, fileIDs []uuid.UUID, links func() (read func() error)) (*dbsqlc.JobLockForUpdateRow, *fileRead, error) {
	lock := lockJob(ctx, tx, ref, fileIDs)
	readLinks := links()
	files := &fileRead{ids: fileIDs}
	var forLink *dbsqlc.FilesForLinkBatchResults
	if len(fileIDs) > 0 {
		forLink = dbsqlc.New().FilesForLink(ctx, tx, []*dbsqlc.FilesForLinkParams{{Ids: fileIDs, OwnerID: ref.OwnerID}})
	}
	job, err := database.One(lock)
	if err != nil {
		return nil, nil, err
	}
	if err := readLinks(); err != nil {
		return nil, nil, err
	}
	if forLink != nil {
		if files.rows, err = database.Many(forLink); err != nil {
			return nil, nil, err
		}
	}
	if err := checkIfMatch(ref, job); err != nil {
		return nil, nil, err
	}
	return job, files, nil
}

// fileRead is what lockJobAndRead read of the files a command names.
type fileRead struct {
	ids  []uuid.UUID
	rows []*dbsqlc.FilesForLinkRow
}

// highest is the highest position among the files read; a NotFoundError
// naming the first id (in the order given) that is missing, deleted or
// another user's.
func (f *fileRead) highest() (int64, error) {
	if len(f.rows) != len(f.ids) {
		found := make(map[uuid.UUID]bool, len(f.rows))
		for _, r := range f.rows {
			found[r.ID] = true
		}
		for _, id := range f.ids {
			if !found[id] {
				return 0, &NotFoundError{What: "file", ID: id}
			}
		}
		return 0, database.ErrNotFound // unreachable: the read gives one row per id named
	}
	var highest int64
	for _, r := range f.rows {
		highest = max(highest, r.Position)
	}
	return highest, nil
}

// fileLockCount is how many file locks there are. Enough that deletions of
// different files rarely wait for each other; few enough that a command
// naming thousands of files takes them all cheaply.
const fileLockCount = 64

// FileLock is the advisory lock (second key; the first is fixed in the
// queries) that guards file id against deletion: taken exclusive to delete
// it, shared by job commands that name it.
func FileLock(id uuid.UUID) int32 {
	h := fnv.New32a()
	_, _ = h.Write(id[:])
	return int32(h.Sum32() % fileLockCount)
}

// fileLocks is the set of file locks of ids, ascending.
func fileLocks(ids []uuid.UUID) []int32 {
	var taken [fileLockCount]bool
	var locks []int32
	for _, id := range ids {
		if l := FileLock(id); !taken[l] {
			taken[l] = true
			locks = append(locks, l)
		}
	}
	slices.Sort(locks)
	return locks
}
