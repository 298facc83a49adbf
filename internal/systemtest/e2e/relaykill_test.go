package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/commandside/projection"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// 10,000 events while the worker (relay and subscribers) is
// SIGKILLed at random points, some of them between the broker's confirm and
// the deletion of the outbox rows (EPOCH_FAULT_CRASH_AFTER_CONFIRM makes the
// worker kill itself there): every event reaches an outside consumer at
// least once, and storage and billing per owner are exactly what the events
// table says.
func TestRelayKilledAtRandomPoints(t *testing.T) {
	t.Parallel()
	const (
		totalEvents = 10_000
		rounds      = 8 // each ends in a SIGKILL: even rounds the fault's (ours if it did not fire within 5 s), odd ones ours
	)
	ctx := e2ekit.CtxFor(t, 3*time.Minute)
	pool, dbURL := testdb.New(t)
	amqpURL := testbroker.New(t)
	start := time.Now()

	prod := newProducer(t, pool, 4, 5)
	var wg sync.WaitGroup
	prodErr := make(chan error, 8)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := prod.run(ctx, g); err != nil {
				prodErr <- err
				prod.stop()
			}
		}()
	}
	t.Cleanup(func() { prod.stop(); wg.Wait() })

	env := func(fault bool) map[string]string {
		e := map[string]string{
			"EPOCH_DATABASE_URL":        dbURL,
			"EPOCH_AMQP_URL":            amqpURL,
			"EPOCH_WORKER_ROLES":        "relay,storage,billing",
			"EPOCH_RELAY_BATCH_SIZE":    "100",
			"EPOCH_RELAY_POLL_INTERVAL": "50ms",
			"EPOCH_CONSUMER_PREFETCH":   "200",
			"EPOCH_DB_MAX_CONNS":        "6",
		}
		if fault {
			e["EPOCH_FAULT_CRASH_AFTER_CONFIRM"] = "0.3"
		}
		return e
	}

	// A first worker declares the topology, so the recorder can bind before
	// anything is written.
	topo := bin.Start(t, "worker", "worker-topology", env(false))
	topo.WaitReady(t, 30*time.Second)
	topo.Kill()
	rec := newRecorder(t, amqpURL)

	kills, selfKills := 0, 0
	prev := int64(0)
	for round := range rounds {
		// Each round lets the producers write their next share: half of it
		// while no worker runs (a backlog to kill into), the rest while the
		// worker relays.
		share := int64(totalEvents * (round + 1) / rounds)
		prod.raise(share)
		half := prev + (share-prev)/2
		e2ekit.Eventually(t, 30*time.Second, "backlog written", func() (bool, string) {
			return prod.produced.Load() >= half, fmt.Sprintf("produced %d of %d", prod.produced.Load(), half)
		})
		prev = share
		before := rec.Distinct()
		fault := round%2 == 0
		w := bin.Start(t, "worker", fmt.Sprintf("worker-round-%d", round), env(fault))
		if fault {
			select {
			case <-w.Done():
			case <-time.After(5 * time.Second):
			}
			if w.Exited() {
				require.True(t, w.KilledBySIGKILL(), "round %d: the worker ended otherwise than by the fault's SIGKILL: %v", round, w.Err())
				selfKills++
			}
		} else {
			// The random point: once the relay has passed a random share
			// of what is there to publish.
			frac := 0.1 + 0.7*rand.Float64()
			e2ekit.Eventually(t, 20*time.Second, "relay progress", func() (bool, string) {
				goal := before + int(frac*float64(int(prod.produced.Load())-before))
				return rec.Distinct() >= goal, fmt.Sprintf("recorder has %d, waiting for %d", rec.Distinct(), goal)
			})
		}
		backlog := e2ekit.OutboxBacklog(t, ctx, pool)
		w.Kill()
		require.True(t, w.KilledBySIGKILL(), "round %d: worker ended by %v, not SIGKILL", round, w.Err())
		kills++
		distinct, deliveries := rec.Stats()
		t.Logf("round %d (fault=%v): killed with %d outbox rows left; produced %d; recorder %d distinct / %d deliveries",
			round, fault, backlog, prod.produced.Load(), distinct, deliveries)
	}
	prod.raise(totalEvents)
	wg.Wait()
	select {
	case err := <-prodErr:
		t.Fatalf("producer: %v", err)
	default:
	}
	require.GreaterOrEqual(t, kills, 5)
	if selfKills == 0 {
		// Not fatal: the rest still checks the random kills' outcome.
		t.Errorf("EPOCH_FAULT_CRASH_AFTER_CONFIRM never killed the worker between confirm and mark (is it implemented in cmd/worker?)")
	}
	t.Logf("%d kills (%d by the fault between confirm and mark); events written in %s", kills, selfKills, time.Since(start))

	// A clean run to the end.
	w := bin.Start(t, "worker", "worker-clean", env(false))
	w.WaitReady(t, 15*time.Second)
	events := e2ekit.LoadEvents(t, ctx, pool)
	require.GreaterOrEqual(t, len(events), totalEvents)
	ids := e2ekit.EventIDs(events)
	fileEvents := e2ekit.CountFileEvents(events)
	e2ekit.Eventually(t, 45*time.Second, "outbox drained, every event on the exchange, both subscribers caught up", func() (bool, string) {
		backlog := e2ekit.OutboxBacklog(t, ctx, pool)
		missing, _ := rec.Missing(ids)
		st, bi := e2ekit.InboxCount(t, ctx, pool, "storage"), e2ekit.InboxCount(t, ctx, pool, "billing")
		return backlog == 0 && missing == 0 && st == fileEvents && bi == fileEvents,
			fmt.Sprintf("outbox %d rows, %d events not received, inbox storage %d billing %d of %d file events", backlog, missing, st, bi, fileEvents)
	})
	distinct, deliveries := rec.Stats()
	require.Equal(t, len(events), distinct, "the recorder got messages that are not in the events table")
	if selfKills > 0 {
		require.Greater(t, deliveries, distinct, "a crash between confirm and mark must republish its batch")
	}
	t.Logf("%d events, %d file events; %d deliveries (%d duplicates); total %s",
		len(events), fileEvents, deliveries, deliveries-distinct, time.Since(start))

	e2ekit.CheckStorageAndBilling(t, ctx, pool, events)
	t.Logf("storage and billing of %d owners checked; total %s", len(e2ekit.BruteForce(t, events).Owners()), time.Since(start))
}

// producer writes events in the test process through command.Service (the
// api's write path, without HTTP): uploads, deletes, job creations and
// links, several commands per transaction, each goroutine with owners of
// its own. It writes until produced reaches the current target.
type producer struct {
	svc      *command.Service
	perTx    int
	owners   [][]uuid.UUID // per goroutine
	produced atomic.Int64

	mu      sync.Mutex
	cond    *sync.Cond
	target  int64
	stopped bool
}

func newProducer(t *testing.T, pool *pgxpool.Pool, goroutines, perTx int) *producer {
	t.Helper()
	d, err := dispatch.New([]dispatch.Subscriber{projection.Subscriber{}}, nil, nil)
	require.NoError(t, err)
	p := &producer{svc: command.NewService(pool, d), perTx: perTx}
	p.cond = sync.NewCond(&p.mu)
	for range goroutines {
		p.owners = append(p.owners, []uuid.UUID{uuid.New(), uuid.New(), uuid.New()})
	}
	return p
}

// raise lets the producers write up to target events in all.
func (p *producer) raise(target int64) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *producer) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.cond.Broadcast()
}

// wait blocks until there is budget to write; false when done for good.
func (p *producer) wait(final int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.stopped && p.produced.Load() >= p.target {
		if p.target >= final {
			return false
		}
		p.cond.Wait()
	}
	return !p.stopped
}

// ownerState is what a producer goroutine knows of one owner.
type ownerState struct {
	id    uuid.UUID
	files []uuid.UUID // live
	jobs  []uuid.UUID
}

type op struct {
	kind  string // upload, delete, job, link
	owner *ownerState
	file  uuid.UUID
	job   uuid.UUID
	size  int64
}

func (p *producer) run(ctx context.Context, g int) error {
	return p.runUpTo(ctx, g, 10_000)
}

// runUpTo is goroutine g's loop, writing until final events in all.
func (p *producer) runUpTo(ctx context.Context, g int, final int64) error {
	rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
	var states []*ownerState
	for _, o := range p.owners[g] {
		states = append(states, &ownerState{id: o})
	}
	for p.wait(final) {
		// Choose the batch outside the transaction (Run may retry fn), with
		// each file deleted at most once and never linked after its delete.
		var ops []op
		deleting := make(map[uuid.UUID]bool)
		for range p.perTx {
			s := states[rng.IntN(len(states))]
			r := rng.Float64()
			switch {
			case len(s.files) < 3 || r < 0.55:
				ops = append(ops, op{kind: "upload", owner: s, size: rng.Int64N(1 << 40)})
			case r < 0.80:
				f := s.files[rng.IntN(len(s.files))]
				if deleting[f] {
					continue
				}
				deleting[f] = true
				ops = append(ops, op{kind: "delete", owner: s, file: f})
			case r < 0.85 || len(s.jobs) == 0:
				ops = append(ops, op{kind: "job", owner: s})
			default:
				f := s.files[rng.IntN(len(s.files))]
				if deleting[f] {
					continue
				}
				ops = append(ops, op{kind: "link", owner: s, file: f, job: s.jobs[rng.IntN(len(s.jobs))]})
			}
		}
		var written int
		var newFiles, newJobs []uuid.UUID
		err := p.svc.Run(ctx, func(tx *database.Tx) error {
			written, newFiles, newJobs = 0, newFiles[:0], newJobs[:0]
			for i, o := range ops {
				var out command.Outcome
				var err error
				switch o.kind {
				case "upload":
					out, err = p.svc.UploadFile(ctx, tx, o.owner.id, command.UploadFile{Name: fmt.Sprintf("f-%d-%d", g, i), SizeBytes: o.size})
					newFiles = append(newFiles, out.ID)
				case "delete":
					out, err = p.svc.DeleteFile(ctx, tx, o.owner.id, o.file)
				case "job":
					out, err = p.svc.CreateJob(ctx, tx, o.owner.id, fmt.Sprintf("j-%d-%d", g, i))
					newJobs = append(newJobs, out.ID)
				case "link":
					out, err = p.svc.LinkFile(ctx, tx, command.JobRef{OwnerID: o.owner.id, JobID: o.job}, o.file)
				}
				if err != nil {
					return fmt.Errorf("%s: %w", o.kind, err)
				}
				written += out.Events
			}
			return nil
		})
		if err != nil {
			return err
		}
		// The transaction committed: apply the batch to what we know.
		nf, nj := 0, 0
		for _, o := range ops {
			s := o.owner
			switch o.kind {
			case "upload":
				s.files = append(s.files, newFiles[nf])
				nf++
			case "delete":
				for i, f := range s.files {
					if f == o.file {
						s.files[i] = s.files[len(s.files)-1]
						s.files = s.files[:len(s.files)-1]
						break
					}
				}
			case "job":
				s.jobs = append(s.jobs, newJobs[nj])
				nj++
			}
		}
		p.produced.Add(int64(written))
	}
	return nil
}
