package catchup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

var (
	// ErrTooManyWaits means the owner already holds MaxWaitsPerOwner waits
	// (a 429).
	ErrTooManyWaits = errors.New("too many waits at once")
	// ErrStopped means the watcher stopped (the api shuts down) before the
	// subscriber caught up.
	ErrStopped = errors.New("watcher stopped")
)

// Watcher defaults.
const (
	// DefaultMaxWaitsPerOwner is how many waits one owner may hold at once.
	DefaultMaxWaitsPerOwner = 8
	// DefaultRecheck is how often the waits are looked at with no wake-up:
	// a wake-up is a hint that can be lost (the listening connection
	// drops), never the only way out.
	DefaultRecheck = time.Second
	// DefaultMinGap spaces the looks while wake-ups pour in: a busy
	// subscriber commits many batches a second, and one look serves every
	// batch committed before it.
	DefaultMinGap = 20 * time.Millisecond
)

// WatcherConfig tunes a Watcher; zero values take the defaults.
type WatcherConfig struct {
	MaxWaitsPerOwner int
	Recheck          time.Duration
	MinGap           time.Duration
}

// Watcher holds the min_position waits for one subscriber in one process.
// A wait holds no connection while it waits: it registers here, and the
// watcher looks for every registered wait at once, in one statement, when
// the subscriber announces a commit (Wake) and every Recheck besides. So
// however many callers wait, the database sees a few statements a second
// from them, and none of the connections other requests need.
type Watcher struct {
	db         *pgxpool.Pool
	subscriber string
	cfg        WatcherConfig
	logger     *slog.Logger

	wake    chan struct{}
	stopped chan struct{}

	mu      sync.Mutex
	waits   map[*wait]struct{}
	byOwner map[uuid.UUID]int
}

type wait struct {
	owner       uuid.UUID
	minPosition int64
	from        int64 // the lowest position that may still be missing
	done        chan struct{}
}

// NewWatcher makes a watcher for subscriber, looking through db. Run must
// run for waits to end before their timeout.
func NewWatcher(db *pgxpool.Pool, subscriber string, cfg WatcherConfig, logger *slog.Logger) *Watcher {
	if cfg.MaxWaitsPerOwner <= 0 {
		cfg.MaxWaitsPerOwner = DefaultMaxWaitsPerOwner
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = DefaultRecheck
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = DefaultMinGap
	}
	return &Watcher{db: db, subscriber: subscriber, cfg: cfg, logger: logger,
		wake: make(chan struct{}, 1), stopped: make(chan struct{}),
		waits: map[*wait]struct{}{}, byOwner: map[uuid.UUID]int{}}
}

// Subscriber is the name of the subscriber w waits for.
func (w *Watcher) Subscriber() string { return w.subscriber }

// Wake tells w the subscriber committed: it looks again soon. It never
// blocks.
func (w *Watcher) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Wait is the package's Wait through w: ErrTooManyWaits when owner holds
// MaxWaitsPerOwner waits already, ErrStopped when w stops first. Its first
// look (the head and the owner's missing events) uses db, a connection
// held for that statement only.
func (w *Watcher) Wait(ctx context.Context, db database.DBTX, owner uuid.UUID, minPosition int64, timeout time.Duration) error {
	if minPosition <= 0 {
		return nil
	}
	wt := &wait{owner: owner, minPosition: minPosition, done: make(chan struct{})}
	if !w.register(wt) {
		return ErrTooManyWaits
	}
	defer w.unregister(wt)
	// Registered before the first look: a commit announced while it runs
	// is looked at again by the watcher.
	from, err := firstLook(ctx, db, w.subscriber, owner, minPosition)
	if err != nil || from == 0 {
		return err
	}
	w.mu.Lock()
	wt.from = max(wt.from, from)
	w.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case <-wt.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-deadline.C:
		return ErrTimeout
	case <-w.stopped:
		return ErrStopped
	}
}

func (w *Watcher) register(wt *wait) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byOwner[wt.owner] >= w.cfg.MaxWaitsPerOwner {
		return false
	}
	w.byOwner[wt.owner]++
	w.waits[wt] = struct{}{}
	return true
}

func (w *Watcher) unregister(wt *wait) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.waits[wt]; !ok {
		return
	}
	delete(w.waits, wt)
	if w.byOwner[wt.owner]--; w.byOwner[wt.owner] == 0 {
		delete(w.byOwner, wt.owner)
	}
}

// Waiting is how many waits are registered.
func (w *Watcher) Waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.waits)
}

// Run looks at the waits when woken and every Recheck, until ctx ends; then
// every wait still registered returns ErrStopped.
func (w *Watcher) Run(ctx context.Context) {
	defer close(w.stopped)
	recheck := time.NewTicker(w.cfg.Recheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-recheck.C:
		}
		if err := w.look(ctx); err != nil && ctx.Err() == nil {
			w.logger.WarnContext(ctx, "catchup: looking at the waits failed", "subscriber", w.subscriber, "error", err)
		}
		select { // the gap between looks
		case <-ctx.Done():
			return
		case <-time.After(w.cfg.MinGap):
		}
	}
}

// look answers every registered wait in one statement: those with nothing
// missing any more are released, the others start their next look at their
// lowest missing position.
func (w *Watcher) look(ctx context.Context) error {
	w.mu.Lock()
	waits := make([]*wait, 0, len(w.waits))
	p := &dbsqlc.InboxFileEventMissingManyParams{Subscriber: w.subscriber}
	for wt := range w.waits {
		waits = append(waits, wt)
		p.OwnerIds = append(p.OwnerIds, wt.owner.String())
		p.FromPositions = append(p.FromPositions, wt.from)
		p.MaxPositions = append(p.MaxPositions, wt.minPosition)
	}
	w.mu.Unlock()
	if len(waits) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := dbsqlc.New().InboxFileEventMissingMany(ctx, w.db, p)
	if err != nil {
		return fmt.Errorf("%s: %w", w.subscriber, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range rows {
		if r.N < 1 || int(r.N) > len(waits) {
			return fmt.Errorf("%s: row %d of %d waits", w.subscriber, r.N, len(waits))
		}
		wt := waits[r.N-1]
		if r.Position == 0 {
			select {
			case <-wt.done:
			default:
				close(wt.done)
			}
			continue
		}
		wt.from = max(wt.from, r.Position)
	}
	return nil
}
