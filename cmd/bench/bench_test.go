package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestQuick runs the whole tool with tiny sizes against the real services
// (its own database and vhost), so it cannot rot: every figure must come
// out measured, and B4 must find no stale preview. A missing service or
// binary fails it.
func TestQuick(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
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
	for _, fig := range []string{"B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8"} {
		require.True(t, seen[fig], "no %s line", fig)
	}
	b, err := os.ReadFile(md)
	require.NoError(t, err)
	require.Contains(t, string(b), "| B1 |")
	require.Contains(t, string(b), "go run ./cmd/bench -quick -write")
}

// testWriter sends the tool's log to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// A failed figure's process logs outlive the bench's temp dir.
func TestSaveLogsKeepsTheProcessLogs(t *testing.T) {
	t.Parallel()
	e := &env{log: slog.New(slog.NewTextHandler(os.Stderr, nil)), dir: t.TempDir()}
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "api-abc.log"), []byte("the api said"), 0o644))
	kept := e.saveLogs()
	require.NotEmpty(t, kept)
	t.Cleanup(func() { _ = os.RemoveAll(kept) })
	b, err := os.ReadFile(filepath.Join(kept, "api-abc.log"))
	require.NoError(t, err)
	require.Equal(t, "the api said", string(b))
}
