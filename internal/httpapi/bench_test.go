package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// BenchmarkSetJobFiles is cmd/bench's 1,000-file set in one process: PUT /v1/jobs/{id}/files with
// 1 and with 1,000 files onto an empty job, through the real handler and
// Postgres. Besides ns/op it reports the statements one request sends and
// the time Postgres took for them (db-ms/op), and logs that time statement
// by statement (-v), so a change to the command path shows where it moved:
//
//	go test -run '^$' -bench SetJobFiles -benchtime 50x -v ./internal/httpapi
func BenchmarkSetJobFiles(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) { benchmarkSetJobFiles(b, n) })
	}
}

func benchmarkSetJobFiles(b *testing.B, n int) {
	pool, url := testdb.New(b)
	timer := &statementTimer{}
	apiPool, err := database.Connect(b.Context(), url, 0, timer)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(apiPool.Close)
	e := setupWith(b, pool, url, apiPool)
	token := e.newUser(b, "bench")
	job := e.createJob(b, token, "bench-job")
	ids := make([]string, n)
	for i := range ids {
		ids[i] = e.upload(b, token, fmt.Sprintf("file-%d", i), int64(i+1))
	}
	set := func(ids []string) {
		body, _ := json.Marshal(map[string]any{"file_ids": ids})
		got := e.must(b, http.StatusOK, req{Method: "PUT", Path: "/v1/jobs/" + job + "/files", Token: token, Body: string(body)})
		if files, _ := got.JSON["files"].([]any); len(files) != len(ids) {
			b.Fatalf("set of %d files answered %d", len(ids), len(files))
		}
	}
	// Warm up the plans of both directions.
	set(ids)
	set([]string{})
	timer.reset()
	b.ResetTimer()
	for range b.N {
		timer.on()
		set(ids)
		timer.off()
		b.StopTimer()
		set([]string{}) // back to an empty job, untimed
		b.StartTimer()
	}
	b.StopTimer()
	byName, statements := timer.snapshot()
	var total time.Duration
	names := make([]string, 0, len(byName))
	for name, d := range byName {
		total += d
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return byName[names[i]] > byName[names[j]] })
	perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(float64(statements)/float64(b.N), "statements/op")
	b.ReportMetric(perOp(total), "db-ms/op")
	var lines []string
	for _, name := range names {
		lines = append(lines, fmt.Sprintf("%s %.2f ms", name, perOp(byName[name])))
	}
	b.Logf("files=%d, Postgres time per request: %s", n, strings.Join(lines, ", "))
}

// statementTimer is a pgx tracer that adds up, while on, the time of each
// statement by its sqlc name (BEGIN and COMMIT by their text).
type statementTimer struct {
	mu         sync.Mutex
	enabled    bool
	byName     map[string]time.Duration
	statements int
}

type startKey struct{}

type started struct {
	name string
	at   time.Time
}

func (s *statementTimer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, startKey{}, &started{name: testdb.StatementName(data.SQL), at: time.Now()})
}

func (s *statementTimer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if st, ok := ctx.Value(startKey{}).(*started); ok {
		s.add(st.name, time.Since(st.at))
	}
}

// A batch's statements (BEGIN riding with a transaction's first statement)
// are timed from the batch's start or the previous result to their own.
func (s *statementTimer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return context.WithValue(ctx, startKey{}, &started{at: time.Now()})
}

func (s *statementTimer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	if st, ok := ctx.Value(startKey{}).(*started); ok {
		now := time.Now()
		s.add(testdb.StatementName(data.SQL), now.Sub(st.at))
		st.at = now
	}
}

func (s *statementTimer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (s *statementTimer) add(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.enabled {
		s.byName[name] += d
		s.statements++
	}
}

func (s *statementTimer) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byName, s.statements = map[string]time.Duration{}, 0
}

func (s *statementTimer) on()  { s.mu.Lock(); s.enabled = true; s.mu.Unlock() }
func (s *statementTimer) off() { s.mu.Lock(); s.enabled = false; s.mu.Unlock() }

func (s *statementTimer) snapshot() (map[string]time.Duration, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byName, s.statements
}
