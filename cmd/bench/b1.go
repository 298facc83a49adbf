package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/commandside/readmodel"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// apiDBMaxConns is the api's default pool size (EPOCH_DB_MAX_CONNS); the
// ceiling's commands get the same number of connections.
const apiDBMaxConns = 8

// slot is one B1 worker's own job and file: no two workers touch the same
// rows, so B1 measures the command path, not lock waits.
type slot struct {
	job, file string
	linked    bool
}

// b1 measures link/unlink commands per second through the api at each
// concurrency, and right after each the same commands run through the
// application's own code without HTTP (direct) at the same concurrency.
func (b *bench) b1(ctx context.Context) error {
	e := b.env
	maxC := 0
	for _, c := range b.sz.b1Conc {
		maxC = max(maxC, c)
	}
	user, err := e.NewUser(ctx, "b1", maxC)
	if err != nil {
		return err
	}
	jobs, err := user.CreateJobs(ctx, maxC, 8, "b1-job")
	if err != nil {
		return err
	}
	files, err := user.UploadMany(ctx, maxC, 8, "b1-file")
	if err != nil {
		return err
	}
	slots := make([]*slot, maxC)
	for i := range slots {
		slots[i] = &slot{job: jobs[i], file: files[i]}
	}
	raw, err := newDirect(ctx, e, user)
	if err != nil {
		return err
	}
	defer raw.pool.Close()

	e.API.ResetPeakRSS()
	for _, c := range b.sz.b1Conc {
		cpu := harness.SampleCPU(b.pids())
		var waitProfile func()
		if c == maxC {
			waitProfile = b.profile(ctx, e.API, fmt.Sprintf("B1-c%d", c), b.sz.b1Duration)
		}
		apiRate, apiErrs := measureRate(ctx, c, b.sz.b1Duration, func(ctx context.Context, i int) error {
			s := slots[i]
			var err error
			if s.linked {
				_, err = user.Unlink(ctx, s.job, s.file)
			} else {
				_, err = user.Link(ctx, s.job, s.file)
			}
			if err == nil {
				s.linked = !s.linked
			}
			return err
		})
		limited := cpu.Since(b.pids())
		if waitProfile != nil {
			waitProfile()
		}
		cpu = harness.SampleCPU(b.pids())
		rawRate, rawErrs := measureRate(ctx, c, b.sz.b1Duration, func(ctx context.Context, i int) error {
			return raw.toggle(ctx, slots[i])
		})
		rawLimited := cpu.Since(b.pids())
		if err := errors.Join(apiErrs, rawErrs); err != nil {
			return fmt.Errorf("B1 at concurrency %d: %w", c, err)
		}
		f := (&figure{Figure: "B1", Name: "commands_per_s", Concurrency: c, Value: apiRate, Unit: "cmd/s",
			LimitedBy: limited, Detail: map[string]any{"raw_cpu": rawLimited, "jobs": "one job and one file per worker (no lock contention)"}}).withCeiling(rawRate)
		if c == maxC {
			f.judge(">=0.6", f.Ratio != nil && *f.Ratio >= 0.6)
		}
		b.bestRate = max(b.bestRate, apiRate) // over every concurrency: B7's drive rate
		b.r.add(f)
	}
	rss, err := e.API.PeakRSS()
	if err != nil {
		return err
	}
	b.r.add((&figure{Figure: "B5", Name: "api_peak_rss_during_B1", Value: float64(rss) / (1 << 20), Unit: "MiB",
		Detail: map[string]any{"source": "VmHWM, reset before B1"}}).judge("<100 MiB", rss < 100<<20))
	b.note("B1: each worker alternates PUT and DELETE /v1/jobs/{id}/files/{file_id} on its own job and file, for %s per concurrency; the ceiling runs the same commands through the application's own code without HTTP (command.Service's LinkFile and UnlinkFile in Service.Run, the job read back with the COMMIT by readmodel.GetJob, as the api's handlers do; the user known, as the api's token cache knows it), on a pool of %d connections opened as the api opens it (database.Connect), the api's default pool size.", b.sz.b1Duration, apiDBMaxConns)
	return nil
}

// measureRate runs op in c goroutines (goroutine i passes i) for d and
// returns the operations completed per second.
func measureRate(ctx context.Context, c int, d time.Duration, op func(ctx context.Context, i int) error) (float64, error) {
	n, err := harness.ClosedLoop(ctx, c, d, op)
	return float64(n) / d.Seconds(), err
}

// direct runs the job commands through the application's own code without
// HTTP: command.Service on a pool opened as the api opens it (its default
// size, database.Connect), each command in Service.Run with the job read
// back with the COMMIT (readmodel.GetJob), as the api's handlers run it
// without an idempotency key. Its dispatcher has the api's subscribers,
// none inline, as the bench's api runs them.
type direct struct {
	pool  *pgxpool.Pool
	svc   *command.Service
	owner uuid.UUID
}

func newDirect(ctx context.Context, e *env, user *harness.Client) (*direct, error) {
	owner, err := uuid.Parse(user.ID)
	if err != nil {
		return nil, fmt.Errorf("direct commands: user: %w", err)
	}
	d, err := dispatch.New(subscribers.Projections(), subscribers.Movable(), nil)
	if err != nil {
		return nil, err
	}
	pool, err := database.Connect(ctx, e.DB.URL, apiDBMaxConns, nil)
	if err != nil {
		return nil, err
	}
	return &direct{pool: pool, svc: command.NewService(pool, d), owner: owner}, nil
}

// toggle links the slot's file when it is not linked and unlinks it when
// it is.
func (d *direct) toggle(ctx context.Context, s *slot) error {
	cmd := d.svc.LinkFile
	if s.linked {
		cmd = d.svc.UnlinkFile
	}
	file := uuid.MustParse(s.file)
	_, err := d.run(ctx, s.job, func(ctx context.Context, tx *database.Tx, ref command.JobRef) (command.Outcome, error) {
		return cmd(ctx, tx, ref, file)
	})
	if err == nil {
		s.linked = !s.linked
	}
	return err
}

// run runs one command on the user's job and returns the job's file count
// read back with the COMMIT.
func (d *direct) run(ctx context.Context, job string, cmd func(context.Context, *database.Tx, command.JobRef) (command.Outcome, error)) (fileCount int64, err error) {
	ref := command.JobRef{OwnerID: d.owner, JobID: uuid.MustParse(job)}
	err = d.svc.Run(ctx, func(tx *database.Tx) error {
		out, err := cmd(ctx, tx, ref)
		if err != nil {
			return err
		}
		tx.ReadAtCommit(func(db database.DBTX) error {
			j, err := readmodel.GetJob(ctx, db, d.owner, out.ID)
			fileCount = j.FileCount
			return err
		})
		return nil
	})
	return fileCount, err
}
