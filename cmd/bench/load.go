package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// fullWorker is one worker running relay, storage and billing, shared by
// B3 and B7 and stopped at the end of the run.
func (b *bench) fullWorker(ctx context.Context) (*proc, error) {
	if b.worker != nil {
		return b.worker, nil
	}
	w, err := b.env.startWorker(ctx, "relay,storage,billing")
	if err != nil {
		return nil, err
	}
	b.worker = w
	// Whatever earlier figures left (a B2 backlog B8 did not drain) must be
	// worked off first, or B3 and B7 would measure that instead.
	if err := waitFor(ctx, b.sz.drainBudget, 100*time.Millisecond, func() (bool, error) {
		var left bool
		if err := b.env.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM outbox)").Scan(&left); err != nil || left {
			return false, err
		}
		for _, q := range []string{"catacloud.storage", "catacloud.billing"} {
			if n, err := queueMessages(ctx, b.env, q); err != nil || n > 0 {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return nil, fmt.Errorf("the system did not settle before the load: %w", err)
	}
	return w, nil
}

// fileLoad drives uploads and deletes through the api open-loop: one
// command every 1/rate seconds whatever the answers' latency (up to
// maxInFlight at once; a slot missed because all were busy is counted).
// Every other command deletes the oldest file it uploaded.
type fileLoad struct {
	user        *client
	rate        float64
	maxInFlight int

	sent, done, missed atomic.Int64
	mu                 sync.Mutex
	files              []string
	err                error
}

func (l *fileLoad) run(ctx context.Context, d time.Duration) error {
	interval := time.Duration(float64(time.Second) / l.rate)
	sem := make(chan struct{}, l.maxInFlight)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if at.Sub(start) >= d {
			break
		}
		if wait := time.Until(at); wait > 0 {
			select {
			case <-ctx.Done():
				wg.Wait()
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		select {
		case sem <- struct{}{}:
		default:
			l.missed.Add(1)
			continue
		}
		l.sent.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := l.one(ctx, i); err != nil {
				l.mu.Lock()
				if l.err == nil {
					l.err = err
				}
				l.mu.Unlock()
				return
			}
			l.done.Add(1)
		}()
	}
	wg.Wait()
	return l.err
}

func (l *fileLoad) one(ctx context.Context, i int) error {
	if i%2 == 1 {
		l.mu.Lock()
		var id string
		if len(l.files) > 0 {
			id, l.files = l.files[0], l.files[1:]
		}
		l.mu.Unlock()
		if id != "" {
			return l.user.deleteFile(ctx, id)
		}
	}
	id, err := l.user.uploadFile(ctx, fmt.Sprintf("load-%d.bin", i), int64(1000+i))
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.files = append(l.files, id)
	l.mu.Unlock()
	return nil
}
