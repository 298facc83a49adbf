package testcluster

import (
	"context"
	"sync"
)

// Opening opens a session (Open) at most once, in the background from the
// first Start or Get on, and hands it to every Get: a program can bring
// the cluster up early, beside other work, and use it later. Close waits
// for an opening in progress (a script's `up` is not cut short) and
// closes what it opened.
type Opening struct {
	Open func(ctx context.Context) (*Session, error)

	once   sync.Once
	done   chan struct{}
	cancel context.CancelFunc // stops a wait for the lock when the program ends first
	s      *Session
	err    error
}

// Start begins opening the session, unless it has begun.
func (o *Opening) Start(ctx context.Context) {
	o.once.Do(func() {
		o.done = make(chan struct{})
		ctx, o.cancel = context.WithCancel(ctx)
		go func() {
			defer close(o.done)
			o.s, o.err = o.Open(ctx)
		}()
	})
}

// Get waits for the session Start opens.
func (o *Opening) Get(ctx context.Context) (*Session, error) {
	o.Start(ctx)
	select {
	case <-o.done:
		return o.s, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close waits for an opening in progress and closes what it opened.
func (o *Opening) Close() {
	if o.done == nil {
		return
	}
	o.cancel()
	<-o.done
	if o.s != nil {
		o.s.Close()
	}
}
