package harness

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/catacloud/epoch/internal/platform/backoff"
)

// Machine describes the machine a run happens on: its cores, memory and
// CPU model, the Go version and the OS.
func Machine() map[string]string {
	m := map[string]string{
		"cpus": strconv.Itoa(runtime.NumCPU()),
		"go":   runtime.Version(),
		"os":   runtime.GOOS + "/" + runtime.GOARCH,
	}
	if b, err := MemTotal(); err == nil {
		m["memory"] = fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// ProfileSelf takes a CPU profile of this process into path until stop is
// called.
func ProfileSelf(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// CommitRate is the transactions committed per second in database db over
// d (pg_stat_database.xact_commit), read through conn, which must be
// connected to another database so its reads are not counted.
func CommitRate(ctx context.Context, conn *pgx.Conn, db string, d time.Duration) (float64, error) {
	read := func() (int64, time.Time, error) {
		var n int64
		err := conn.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", db).Scan(&n)
		return n, time.Now(), err
	}
	n0, t0, err := read()
	if err != nil {
		return 0, err
	}
	if err := Sleep(ctx, d); err != nil {
		return 0, err
	}
	n1, t1, err := read()
	if err != nil {
		return 0, err
	}
	return float64(n1-n0) / t1.Sub(t0).Seconds(), nil
}

// Sleep waits d, or until ctx ends: then it returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	if !backoff.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}
