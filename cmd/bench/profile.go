package main

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// profileSelf takes a CPU profile of the bench itself until stop is called:
// the load generator shares the machine, and its share is part of what a
// figure's "limited by" reports. Without a directory it does nothing.
func (b *bench) profileSelf(name string) (stop func()) {
	if b.pprofDir == "" {
		return func() {}
	}
	path := filepath.Join(b.pprofDir, name+"-bench.pprof")
	stopProfile, err := harness.ProfileSelf(path)
	if err != nil {
		b.note("pprof of the bench (%s): %v", name, err)
		return func() {}
	}
	return func() {
		if err := stopProfile(); err == nil {
			b.note("pprof: %s (`go tool pprof -top %s`)", path, path)
		}
	}
}

// profile takes a CPU profile of p for d in the background (pprof, served
// when EPOCH_PPROF is set) into the -pprof directory; wait blocks until it
// is written. Without a directory it does nothing. A binary that does not
// serve pprof is noted, not an error: the figure stands without it.
func (b *bench) profile(ctx context.Context, p *harness.Proc, name string, d time.Duration) (wait func()) {
	if b.pprofDir == "" || p == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		path := filepath.Join(b.pprofDir, name+"-"+p.Name+".pprof")
		switch err := p.CPUProfile(ctx, d, path); {
		case errors.Is(err, harness.ErrNoProfile):
			b.note("pprof of %s (%s): %v; set it up behind EPOCH_PPROF", p.Name, name, err)
		case err != nil:
			b.note("pprof of %s (%s): %v", p.Name, name, err)
		default:
			b.note("pprof: %s (`go tool pprof -top %s`)", path, path)
		}
	}()
	return func() { <-done }
}
