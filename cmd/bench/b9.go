package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// b9Conc is how many GETs of the full job's preview run at once in B9.
const b9Conc = 16

// b9 measures the preview of a full job: one job holding b9Files files
// (domain.MaxJobFiles in a full run), each named with the longest name
// (domain.MaxTextLength ASCII characters), uploaded through the api and
// set in one PUT /v1/jobs/{id}/files. It reports the size of one
// GET /v1/jobs/{id} body, and the api's peak RSS over rounds of b9Conc
// such GETs at once (each reading its whole body), with their latency.
func (b *bench) b9(ctx context.Context) error {
	e := b.env
	n := b.sz.b9Files
	user, err := e.NewUser(ctx, "b9", b9Conc)
	if err != nil {
		return err
	}
	job, err := user.CreateJob(ctx, "b9-full-job")
	if err != nil {
		return err
	}
	files := make([]string, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			prefix := fmt.Sprintf("b9-%05d-", i)
			name := prefix + strings.Repeat("n", domain.MaxTextLength-len(prefix))
			f, err := user.UploadFile(gctx, name, int64(1000+i))
			files[i] = f.ID
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("B9: upload %d files: %w", n, err)
	}
	set, err := user.SetFiles(ctx, job, files)
	if err != nil {
		return fmt.Errorf("B9: set %d files: %w", n, err)
	}
	if len(set.Files) != n {
		return fmt.Errorf("B9: set of %d files answered %d", n, len(set.Files))
	}

	// One GET, whole body kept: its size, and a check that it lists every
	// file. It also warms the api up for the rounds.
	size, err := previewSize(ctx, user, job, n)
	if err != nil {
		return err
	}

	// Rounds of b9Conc GETs at once, each reading (and dropping) its whole
	// body, with the api's peak RSS taken over all of them.
	rounds := b.sz.b9Rounds
	var mu sync.Mutex
	lat := make([]float64, 0, rounds*b9Conc)
	e.API.ResetPeakRSS()
	atReset, err := e.API.PeakRSS() // the resident set the rounds start from
	if err != nil {
		return err
	}
	cpu := harness.SampleCPU(b.pids())
	start := time.Now()
	for range rounds {
		g, gctx := errgroup.WithContext(ctx)
		for range b9Conc {
			g.Go(func() error {
				t0 := time.Now()
				got, err := user.DrainBody(gctx, "/v1/jobs/"+job)
				ms := float64(time.Since(t0).Microseconds()) / 1000
				if err != nil {
					return err
				}
				if got != size {
					return fmt.Errorf("B9: a preview of %d bytes, the first was %d", got, size)
				}
				mu.Lock()
				lat = append(lat, ms)
				mu.Unlock()
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	elapsed := time.Since(start)
	limited := cpu.Since(b.pids())
	rss, err := e.API.PeakRSS()
	if err != nil {
		return err
	}
	sort.Float64s(lat)

	b.r.add((&figure{Figure: "B9", Name: fmt.Sprintf("preview_%d_files_bytes", n), Value: float64(size), Unit: "bytes",
		Detail: map[string]any{"files": n, "name_chars": domain.MaxTextLength, "mib": round3(float64(size) / (1 << 20))}}).
		judge("<4 MiB", size < 4<<20))
	b.r.add((&figure{Figure: "B9", Name: "api_peak_rss_during_previews", Concurrency: b9Conc, Value: float64(rss) / (1 << 20), Unit: "MiB",
		LimitedBy: limited, Detail: map[string]any{
			"source": "VmHWM of the api, reset before the rounds", "rss_at_reset_mib": round3(float64(atReset) / (1 << 20)), "files": n, "rounds": rounds, "gets": len(lat),
			"get_p50_ms": round3(percentile(lat, 50)), "get_p99_ms": round3(percentile(lat, 99)), "get_max_ms": round3(lat[len(lat)-1]),
			"seconds": round3(elapsed.Seconds()),
		}}).judge("<100 MiB", rss < 100<<20))
	b.note("B9: one job holding %d files (domain.MaxJobFiles in a full run), each named with %d ASCII characters (domain.MaxTextLength), uploaded through POST /v1/files 8 at a time and set with one PUT /v1/jobs/{id}/files; one GET /v1/jobs/{id} gives the body's size, then %d rounds of %d GETs at once, each reading its whole body, give the api's peak RSS (VmHWM, reset before the rounds) and the GETs' latency.", n, domain.MaxTextLength, rounds, b9Conc)
	return nil
}

// previewSize GETs the job's preview and returns its size in bytes,
// checking that it lists n files.
func previewSize(ctx context.Context, c *harness.Client, job string, n int) (int, error) {
	body, err := c.GetBody(ctx, "/v1/jobs/"+job)
	if err != nil {
		return 0, err
	}
	var preview harness.Job
	if err := json.Unmarshal(body, &preview); err != nil {
		return 0, fmt.Errorf("B9: preview: %w", err)
	}
	if len(preview.Files) != n {
		return 0, fmt.Errorf("B9: preview of %d files lists %d", n, len(preview.Files))
	}
	return len(body), nil
}
