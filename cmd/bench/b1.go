package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/outbox"
)

// apiDBMaxConns is the api's default pool size (EPOCH_DB_MAX_CONNS); the
// raw ceiling gets the same number of connections.
const apiDBMaxConns = 8

// slot is one B1 worker's own job and file: no two workers touch the same
// rows, so B1 measures the command path, not lock waits.
type slot struct {
	job, file string
	linked    bool
}

// b1 measures link/unlink commands per second through the api at each
// concurrency, and right after each the same statements sent raw through
// pgx (no HTTP, no application code) at the same concurrency.
func (b *bench) b1(ctx context.Context) error {
	e := b.env
	maxC := 0
	for _, c := range b.sz.b1Conc {
		maxC = max(maxC, c)
	}
	user, err := e.newUser(ctx, "b1", maxC)
	if err != nil {
		return err
	}
	jobs, err := user.createJobs(ctx, maxC, 8, "b1-job")
	if err != nil {
		return err
	}
	files, err := user.uploadMany(ctx, maxC, 8, "b1-file")
	if err != nil {
		return err
	}
	slots := make([]*slot, maxC)
	for i := range slots {
		slots[i] = &slot{job: jobs[i], file: files[i]}
	}
	raw, err := newRawLinker(ctx, e, user.token)
	if err != nil {
		return err
	}
	defer raw.pool.Close()

	e.api.resetPeakRSS()
	for _, c := range b.sz.b1Conc {
		cpu := sampleCPU(b.pids())
		var waitProfile func()
		if c == maxC {
			waitProfile = b.profile(ctx, e.api, fmt.Sprintf("B1-c%d", c), b.sz.b1Duration)
		}
		apiRate, apiErrs := measureRate(ctx, c, b.sz.b1Duration, func(ctx context.Context, i int) error {
			s := slots[i]
			var err error
			if s.linked {
				_, err = user.unlink(ctx, s.job, s.file)
			} else {
				_, err = user.link(ctx, s.job, s.file)
			}
			if err == nil {
				s.linked = !s.linked
			}
			return err
		})
		limited := cpuSince(cpu, b.pids())
		if waitProfile != nil {
			waitProfile()
		}
		cpu = sampleCPU(b.pids())
		rawRate, rawErrs := measureRate(ctx, c, b.sz.b1Duration, func(ctx context.Context, i int) error {
			return raw.toggle(ctx, slots[i])
		})
		rawLimited := cpuSince(cpu, b.pids())
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
	rss, err := e.api.peakRSS()
	if err != nil {
		return err
	}
	b.r.add((&figure{Figure: "B5", Name: "api_peak_rss_during_B1", Value: float64(rss) / (1 << 20), Unit: "MiB",
		Detail: map[string]any{"source": "VmHWM, reset before B1"}}).judge("<100 MiB", rss < 100<<20))
	b.note("B1: each worker alternates PUT and DELETE /v1/jobs/{id}/files/{file_id} on its own job and file, for %s per concurrency; the raw ceiling replays the statements of queries/*.sql a link runs (the token looked up once, as the api caches it; then BEGIN, JobLockForUpdate, JobFileLinkedIDs, FilesForLink, EventAppend, ProjectionJobFilesLinked/Unlinked, OutboxInsert, JobGet, JobFileList, COMMIT, OutboxWake), in the api's three round trips (the preview read back with the COMMIT, the relays' wake-up after it), through a pgx pool of %d connections, the api's default pool size.", b.sz.b1Duration, apiDBMaxConns)
	return nil
}

// measureRate runs op in c goroutines (goroutine i passes i) for d and
// returns the operations completed per second. The first error stops it.
func measureRate(ctx context.Context, c int, d time.Duration, op func(ctx context.Context, i int) error) (float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := op(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				if time.Now().Before(deadline) {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(done.Load()) / d.Seconds(), firstErr
}

// rawLinker sends a link's or an unlink's statements straight through pgx.
type rawLinker struct {
	pool      *pgxpool.Pool
	q         map[string]*rawQuery
	tokenHash []byte
	owner     uuid.UUID
}

func newRawLinker(ctx context.Context, e *env, token string) (*rawLinker, error) {
	q, err := loadQueries(e.root)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"UserIDByTokenHash", "JobLockForUpdate", "FilesForLink", "JobFileLinkedIDs",
		"JobFileIDsInLinkOrder", "EventAppend", "ProjectionJobFilesLinked", "ProjectionJobFilesUnlinked", "OutboxInsert", "JobGet", "JobFileList", "OutboxWake"} {
		if q[name] == nil {
			return nil, fmt.Errorf("raw ceiling: query %s not found in queries/", name)
		}
	}
	cfg, err := pgxpool.ParseConfig(e.dbURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = apiDBMaxConns
	// google/uuid's UUID is a driver.Valuer: without its codec pgx would
	// format every uuid of an array as text and parse it back, which the
	// api does not pay for either (database.Connect registers the codec).
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		pgxuuid.Register(conn.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(token))
	r := &rawLinker{pool: pool, q: q, tokenHash: sum[:]}
	if err := pool.QueryRow(ctx, q["UserIDByTokenHash"].sql, q["UserIDByTokenHash"].args(map[string]any{"token_hash": r.tokenHash})...).Scan(&r.owner); err != nil {
		pool.Close()
		return nil, fmt.Errorf("raw ceiling: user: %w", err)
	}
	return r, nil
}

// toggle links the slot's file when it is not linked and unlinks it when
// it is, exactly as the api's link and unlink commands do (their links
// read is JobFileLinkedIDs), and reads the preview back.
func (r *rawLinker) toggle(ctx context.Context, s *slot) error {
	linked, _, err := r.command(ctx, uuid.MustParse(s.job), []uuid.UUID{uuid.MustParse(s.file)}, "JobFileLinkedIDs")
	if err == nil {
		s.linked = !linked
	}
	return err
}

// command runs one command's statements on job for files: when the job
// has none of them it links them all, in order, otherwise it unlinks the
// ones it has; linked reports the latter, and fileCount is the job's
// file_count read back with the COMMIT. links names the read of the
// job's links the command makes (JobFileLinkedIDs for a link or an unlink,
// JobFileIDsInLinkOrder for a set). It sends them in the same round trips
// as the api (database.InTx and its Tx's queue there; pgx batches here), and
// like the api's token cache it looked the token up once, in newRawLinker:
//  1. BEGIN, JobLockForUpdate, the links read, FilesForLink;
//  2. EventAppend, one event per file;
//  3. ProjectionJobFilesLinked/Unlinked, OutboxInsert, JobGet, JobFileList,
//     COMMIT (the api reads its answer back with the COMMIT), OutboxWake
//     (the relays' wake-up, after the COMMIT).
func (r *rawLinker) command(ctx context.Context, job uuid.UUID, files []uuid.UUID, links string) (linked bool, fileCount int64, err error) {
	pooled, err := r.pool.Acquire(ctx)
	if err != nil {
		return false, 0, err
	}
	defer pooled.Release()
	conn := pooled.Conn()
	committed := false
	defer func() {
		if !committed {
			_, _ = conn.Exec(ctx, "rollback")
		}
	}()
	j, has, err := r.lockAndRead(ctx, conn, job, files, links)
	if err != nil {
		return false, 0, fmt.Errorf("lock job and read: %w", err)
	}
	linked = len(has) > 0
	eventType, project, changed := "job.file_linked", "ProjectionJobFilesLinked", files
	if linked {
		eventType, project, changed = "job.file_unlinked", "ProjectionJobFilesUnlinked", nil
		for _, f := range files {
			if has[f] {
				changed = append(changed, f)
			}
		}
	}
	versions, positions, err := r.appendEvents(ctx, conn, job, j.version, eventType, changed)
	if err != nil {
		return false, 0, fmt.Errorf("append: %w", err)
	}
	if j, err = r.projectAndCommit(ctx, conn, job, project, changed, versions, positions); err != nil {
		return false, 0, fmt.Errorf("project, queue, read back and commit: %w", err)
	}
	committed = true
	return linked, j.fileCount, nil
}

// rawJob is the part of a job row the raw commands use; scanJob reads all
// of JobLockForUpdate's or JobGet's columns, as the api does.
type rawJob struct {
	version   int32
	fileCount int64
}

func scanJob(row pgx.Row) (rawJob, error) {
	var (
		id, ownerID          uuid.UUID
		name, totalBytes     string
		createdAt            time.Time
		createdPos, position int64
		j                    rawJob
	)
	err := row.Scan(&id, &ownerID, &name, &createdAt, &createdPos, &j.version, &position, &j.fileCount, &totalBytes)
	return j, err
}

// lockAndRead is the first round trip: BEGIN, the job's lock, its links
// among files (has) and the owner's files.
func (r *rawLinker) lockAndRead(ctx context.Context, conn *pgx.Conn, job uuid.UUID, files []uuid.UUID, links string) (j rawJob, has map[uuid.UUID]bool, err error) {
	q := r.q
	locks := map[int32]bool{}
	for _, f := range files {
		locks[command.FileLock(f)] = true
	}
	b := &pgx.Batch{}
	b.Queue("begin")
	b.Queue(q["JobLockForUpdate"].sql, q["JobLockForUpdate"].args(map[string]any{"id": job, "owner_id": r.owner, "file_locks": slices.Sorted(maps.Keys(locks))})...)
	b.Queue(q[links].sql, q[links].args(map[string]any{"job_id": job, "file_ids": files})...)
	b.Queue(q["FilesForLink"].sql, q["FilesForLink"].args(map[string]any{"ids": files, "owner_id": r.owner})...)
	br := conn.SendBatch(ctx, b)
	has = map[uuid.UUID]bool{}
	err = errors.Join(
		func() error { _, err := br.Exec(); return err }(),
		func() (err error) { j, err = scanJob(br.QueryRow()); return err }(),
		func() error {
			rows, err := br.Query()
			if err != nil {
				return err
			}
			for rows.Next() {
				var f uuid.UUID
				if err := rows.Scan(&f); err != nil {
					rows.Close()
					return err
				}
				has[f] = true
			}
			rows.Close()
			return rows.Err()
		}(),
		drain(br.Query()),
		br.Close(),
	)
	return j, has, err
}

// appendEvents is the second round trip: one event of eventType per file,
// the job's next versions, in order; it returns their versions and
// positions.
func (r *rawLinker) appendEvents(ctx context.Context, conn *pgx.Conn, job uuid.UUID, version int32, eventType string, files []uuid.UUID) (versions []int32, positions []int64, err error) {
	n := len(files)
	ids, streamIDs := make([]uuid.UUID, n), make([]uuid.UUID, n)
	streamTypes, types := make([]string, n), make([]string, n)
	versions, datas, at := make([]int32, n), make([][]byte, n), make([]time.Time, n)
	for i, f := range files {
		data, err := json.Marshal(map[string]uuid.UUID{"file_id": f})
		if err != nil {
			return nil, nil, err
		}
		versions[i] = version + int32(i) + 1
		ids[i], streamIDs[i], streamTypes[i], types[i] = eventstore.ID(job, versions[i]), job, domain.StreamJob, eventType
		datas[i] = data // at[i] zero: the database's clock, as the api's commands take it
	}
	rows, err := conn.Query(ctx, r.q["EventAppend"].sql, r.q["EventAppend"].args(map[string]any{
		"ids": ids, "stream_types": streamTypes, "stream_ids": streamIDs,
		"versions": versions, "types": types, "datas": datas, "occurred_ats": at,
	})...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	positions = make([]int64, 0, n)
	for rows.Next() {
		var pos int64
		if err := rows.Scan(nil, &pos, nil); err != nil { // the id is ours already; so is the time
			return nil, nil, err
		}
		positions = append(positions, pos)
	}
	return versions, positions, rows.Err()
}

// projectAndCommit is the third round trip: the projection, the outbox
// rows (one per run of consecutive positions), the preview read back, the
// COMMIT and the relays' wake-up. It returns the job read back.
func (r *rawLinker) projectAndCommit(ctx context.Context, conn *pgx.Conn, job uuid.UUID, project string, files []uuid.UUID, versions []int32, positions []int64) (j rawJob, err error) {
	q := r.q
	jobIDs := make([]uuid.UUID, len(files))
	for i := range jobIDs {
		jobIDs[i] = job
	}
	first, last := positionRuns(positions)
	partitions := make([]int16, len(first))
	for i := range partitions {
		partitions[i] = outbox.PartitionOf(job)
	}
	b := &pgx.Batch{}
	b.Queue(q[project].sql, q[project].args(map[string]any{
		"job_ids": jobIDs, "file_ids": files, "versions": versions, "positions": positions,
	})...)
	b.Queue(q["OutboxInsert"].sql, q["OutboxInsert"].args(map[string]any{
		"first_positions": first, "last_positions": last, "partitions": partitions,
	})...)
	b.Queue(q["JobGet"].sql, q["JobGet"].args(map[string]any{"id": job, "owner_id": r.owner})...)
	b.Queue(q["JobFileList"].sql, q["JobFileList"].args(map[string]any{"job_id": job, "owner_id": r.owner})...)
	b.Queue("commit")
	b.Queue(q["OutboxWake"].sql, q["OutboxWake"].args(map[string]any{"channel": outbox.NotifyChannel})...)
	br := conn.SendBatch(ctx, b)
	err = errors.Join(
		func() error { _, err := br.Exec(); return err }(),
		func() error { _, err := br.Exec(); return err }(),
		func() (err error) { j, err = scanJob(br.QueryRow()); return err }(),
		drain(br.Query()),
		func() error { _, err := br.Exec(); return err }(),
		func() error { _, err := br.Exec(); return err }(),
		br.Close(),
	)
	return j, err
}

// positionRuns splits ascending positions into runs of consecutive ones,
// as the api's outbox rows cover them (one row per run).
func positionRuns(positions []int64) (first, last []int64) {
	for i, p := range positions {
		if i > 0 && p == positions[i-1]+1 {
			last[len(last)-1] = p
			continue
		}
		first, last = append(first, p), append(last, p)
	}
	return first, last
}

// drain reads every row (the work a caller reading them would do) and
// closes the result.
func drain(rows pgx.Rows, err error) error {
	if err != nil {
		return err
	}
	for rows.Next() {
		if _, err := rows.Values(); err != nil {
			rows.Close()
			return err
		}
	}
	rows.Close()
	return rows.Err()
}
