package command

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/dispatch"
	"github.com/catacloud/epoch/internal/readmodel"
)

var errTODO = errors.New("command: not implemented yet")

// Service runs commands. Each method takes the caller's transaction; Run
// supplies one and retries it on conflicts.
type Service struct {
	pool       *pgxpool.Pool
	dispatcher *dispatch.Dispatcher
}

// NewService makes a Service writing through pool and dispatching to d.
func NewService(pool *pgxpool.Pool, d *dispatch.Dispatcher) *Service {
	return &Service{pool: pool, dispatcher: d}
}

// Run runs fn in a transaction and commits it; on a version conflict,
// deadlock or serialization failure it runs fn again in a new transaction
// (a few times), so concurrent commands on one job all land.
func (s *Service) Run(ctx context.Context, fn func(tx pgx.Tx) error) error { return errTODO }

func (s *Service) UploadFile(ctx context.Context, tx pgx.Tx, owner uuid.UUID, in UploadFile) (readmodel.File, Outcome, error) {
	return readmodel.File{}, Outcome{}, errTODO
}

func (s *Service) DeleteFile(ctx context.Context, tx pgx.Tx, owner, fileID uuid.UUID) (Outcome, error) {
	return Outcome{}, errTODO
}

func (s *Service) CreateJob(ctx context.Context, tx pgx.Tx, owner uuid.UUID, name string) (readmodel.Job, Outcome, error) {
	return readmodel.Job{}, Outcome{}, errTODO
}

func (s *Service) DeleteJob(ctx context.Context, tx pgx.Tx, ref JobRef) (Outcome, error) {
	return Outcome{}, errTODO
}

func (s *Service) LinkFile(ctx context.Context, tx pgx.Tx, ref JobRef, fileID uuid.UUID) (readmodel.Job, Outcome, error) {
	return readmodel.Job{}, Outcome{}, errTODO
}

func (s *Service) UnlinkFile(ctx context.Context, tx pgx.Tx, ref JobRef, fileID uuid.UUID) (readmodel.Job, Outcome, error) {
	return readmodel.Job{}, Outcome{}, errTODO
}

// SetJobFiles makes the job's files exactly fileIDs (at most
// MaxSetFiles, no duplicates): it unlinks the files not listed, then links
// the new ones in the order given.
func (s *Service) SetJobFiles(ctx context.Context, tx pgx.Tx, ref JobRef, fileIDs []uuid.UUID) (readmodel.Job, Outcome, error) {
	return readmodel.Job{}, Outcome{}, errTODO
}

// MaxSetFiles is the most file ids one SetJobFiles takes.
const MaxSetFiles = 10000
