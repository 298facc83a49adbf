package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// TestQuick runs the whole tool with tiny sizes against the real services
// (its own database and vhost, and the three-node cluster, which it starts
// when it is down, under the cluster lock), so it cannot rot: every figure
// must come out measured, and B4 must find no stale preview. A missing
// service or binary fails it.
func TestQuick(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var out bytes.Buffer
	md := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	err := run(ctx, log, &out, options{quick: true, write: md})

	seen := map[string]bool{}
	s := bufio.NewScanner(&out)
	for s.Scan() {
		var f figure
		require.NoError(t, json.Unmarshal(s.Bytes(), &f), "line %s", s.Text())
		require.Empty(t, f.Error, "%s %s failed", f.Figure, f.Name)
		seen[f.Figure] = true
		switch f.Figure {
		case "B4":
			require.Zero(t, f.Value, "stale previews")
		case "B7":
			require.False(t, math.IsNaN(f.Value) || math.IsInf(f.Value, 0), "%s %s", f.Figure, f.Name)
		default:
			require.Greater(t, f.Value, 0.0, "%s %s", f.Figure, f.Name)
		}
	}
	require.NoError(t, err)
	for _, fig := range []string{"B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "B13", "B14", "B15", "B16"} {
		require.True(t, seen[fig], "no %s line", fig)
	}
	b, err := os.ReadFile(md)
	require.NoError(t, err)
	require.Contains(t, string(b), "| B1 |")
	require.Contains(t, string(b), "| B13 | cluster_relay_two_workers_msgs_per_s |")
	require.Contains(t, string(b), "go run ./cmd/bench -quick -write")
}

// testWriter sends the tool's log to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// The relay detail reads the phases and the claim wait from two readings
// of the worker's /metrics.
func TestRelayDetailFromTwoReadings(t *testing.T) {
	t.Parallel()
	reading := func(claimCount, publishCount, waitSum float64, buckets [3]float64) string {
		return fmt.Sprintf(`# HELP epoch_relay_cycle_phase_seconds x
# TYPE epoch_relay_cycle_phase_seconds histogram
epoch_relay_cycle_phase_seconds_sum{phase="claim"} %g
epoch_relay_cycle_phase_seconds_count{phase="claim"} %g
epoch_relay_cycle_phase_seconds_sum{phase="publish"} %g
epoch_relay_cycle_phase_seconds_count{phase="publish"} %g
epoch_relay_claim_wait_seconds_bucket{le="0.001"} %g
epoch_relay_claim_wait_seconds_bucket{le="0.002"} %g
epoch_relay_claim_wait_seconds_bucket{le="0.005"} %g
epoch_relay_claim_wait_seconds_sum %g
epoch_relay_claim_wait_seconds_count %g
epoch_consumer_batch_seconds_sum{subscriber="billing"} %g
epoch_consumer_batch_seconds_count{subscriber="billing"} %g
epoch_db_statements_total 42
`, claimCount/100, claimCount, publishCount/50, publishCount, buckets[0], buckets[1], buckets[2], waitSum, buckets[2], waitSum/10, buckets[2])
	}
	read := func(text string) harness.Metrics {
		m, err := harness.ParseMetrics(strings.NewReader(text))
		require.NoError(t, err)
		return m
	}
	before := read(reading(0, 0, 0, [3]float64{0, 0, 0}))
	// 10 cycles claiming for 10 ms each, 4 of them publishing for 20 ms;
	// 10 rows waited: 2 under 1 ms, 6 in (1, 2] ms, 2 in (2, 5] ms, 30 ms
	// in all.
	after := read(reading(10, 4, 0.03, [3]float64{2, 8, 10}))
	detail := relayPhaseDetail(before, after)
	require.Equal(t, 10.0, detail["cycles"])
	require.Equal(t, 6.0, detail["empty_cycles"], "10 claims, 4 publishes")
	require.Equal(t, map[string]any{"claim": 10.0, "publish": 20.0}, detail["mean_ms"], "settle never ran")
	require.Equal(t, 3.0, detail["claim_wait_mean_ms"])
	require.Equal(t, 1.5, detail["claim_wait_p50_ms"], "the 5th of 10 lies half way through (1, 2] ms")

	// 10 billing batches in 3 ms.
	batches := after.Since(before)
	mean, ok := batches.Mean("epoch_consumer_batch_seconds", `subscriber="billing"`)
	require.True(t, ok)
	require.InDelta(t, 0.0003, mean, 1e-12)
	_, ok = batches.Mean("epoch_consumer_batch_seconds", `subscriber="storage"`)
	require.False(t, ok, "no storage batches")
}

// A figure that does not exist, or a -write into no directory, is refused
// before anything starts; B5 and B8 bring the figures they are measured in.
func TestBadOptionsAreRefusedUpFront(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	var out bytes.Buffer
	err := run(context.Background(), log, &out, options{only: "B1,B17"})
	require.ErrorContains(t, err, `"B17" is not a figure`)
	err = run(context.Background(), log, &out, options{only: "B1", write: filepath.Join(t.TempDir(), "missing", "BENCHMARKS.md")})
	require.ErrorContains(t, err, "no directory")
	require.Empty(t, out.String(), "no figure ran")

	want, err := figuresWanted(" b5 ")
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"B1": true, "B2": true, "B5": true}, want)
	want, err = figuresWanted("B8")
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"B2": true, "B8": true}, want)
	want, err = figuresWanted("")
	require.NoError(t, err)
	require.Len(t, want, 16)
	want, err = figuresWanted("b10")
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"B10": true}, want)
}

// The table writes a value of seven digits or more as a plain number, as
// the raw lines do, not 3.291152e+06.
func TestMarkdownWritesLargeValuesWithoutExponent(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	r := &report{out: json.NewEncoder(&out)}
	r.add((&figure{Figure: "B9", Name: "preview_10000_files_bytes", Value: 3291152, Unit: "bytes"}).judge("<4 MiB", true))
	md := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	require.NoError(t, writeMarkdown(md, r, map[string]string{}, "go run ./cmd/bench -only B9", time.Now(), nil))
	b, err := os.ReadFile(md)
	require.NoError(t, err)
	require.Contains(t, string(b), "| B9 | preview_10000_files_bytes | 3291152 bytes |")
}
