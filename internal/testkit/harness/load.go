package harness

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// FileLoad drives uploads and deletes through the api open-loop: one
// command every 1/Rate seconds whatever the answers' latency (up to
// MaxInFlight at once; a slot missed because all were busy is counted, not
// sent late). Every other command deletes the oldest file it uploaded.
type FileLoad struct {
	User        *Client
	Rate        float64
	MaxInFlight int

	Sent, Done, Missed atomic.Int64

	mu    sync.Mutex
	files []string
	err   error
}

// Run drives the load for d and returns the first command's error.
func (l *FileLoad) Run(ctx context.Context, d time.Duration) error {
	interval := time.Duration(float64(time.Second) / l.Rate)
	sem := make(chan struct{}, l.MaxInFlight)
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
			l.Missed.Add(1)
			continue
		}
		l.Sent.Add(1)
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
			l.Done.Add(1)
		}()
	}
	wg.Wait()
	return l.err
}

// one sends the i-th command: an odd one deletes the oldest file uploaded
// (when there is one), any other uploads a file.
func (l *FileLoad) one(ctx context.Context, i int) error {
	if i%2 == 1 {
		l.mu.Lock()
		var id string
		if len(l.files) > 0 {
			id, l.files = l.files[0], l.files[1:]
		}
		l.mu.Unlock()
		if id != "" {
			return l.User.DeleteFile(ctx, id)
		}
	}
	f, err := l.User.UploadFile(ctx, fmt.Sprintf("load-%d.bin", i), int64(1000+i))
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.files = append(l.files, f.ID)
	l.mu.Unlock()
	return nil
}

// ClosedLoop runs op from c goroutines back to back (goroutine k passes k)
// for d and returns how many calls finished within d. The first error
// stops them all.
func ClosedLoop(ctx context.Context, c int, d time.Duration, op func(ctx context.Context, k int) error) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for k := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := op(ctx, k); err != nil {
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
	return done.Load(), firstErr
}
