package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"
)

// profileSelf takes a CPU profile of the bench itself until stop is called:
// the load generator shares the machine, and its share is part of what a
// figure's "limited by" reports. Without a directory it does nothing.
func (b *bench) profileSelf(name string) (stop func()) {
	if b.pprofDir == "" {
		return func() {}
	}
	path := filepath.Join(b.pprofDir, name+"-bench.pprof")
	f, err := os.Create(path)
	if err != nil {
		b.note("pprof of the bench (%s): %v", name, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		b.note("pprof of the bench (%s): %v", name, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err == nil {
			b.note("pprof: %s (`go tool pprof -top %s`)", path, path)
		}
	}
}

// profile takes a CPU profile of p for d in the background (pprof, served
// when EPOCH_PPROF is set) into the -pprof directory; wait blocks until it
// is written. Without a directory it does nothing. A binary that does not
// serve pprof is noted, not an error: the figure stands without it.
func (b *bench) profile(ctx context.Context, p *proc, name string, d time.Duration) (wait func()) {
	if b.pprofDir == "" || p == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		secs := max(1, int(d.Seconds()))
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.addr, secs)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		resp, err := (&http.Client{Timeout: d + 30*time.Second}).Do(req)
		if err != nil {
			b.note("pprof of %s (%s): %v", p.name, name, err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.note("pprof of %s (%s): not served (%s); set it up behind EPOCH_PPROF", p.name, name, resp.Status)
			return
		}
		path := filepath.Join(b.pprofDir, name+"-"+p.name+".pprof")
		f, err := os.Create(path)
		if err != nil {
			return
		}
		_, err = io.Copy(f, resp.Body)
		_ = f.Close()
		if err == nil {
			b.note("pprof: %s (`go tool pprof -top %s`)", path, path)
		}
	}()
	return func() { <-done }
}
