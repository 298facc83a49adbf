package harness

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// CPUSample is the CPU time spent so far by the processes that matter:
// Postgres (all its backends), RabbitMQ (beam.smp) and the processes named
// (by pid). Two samples give each one's share of a phase.
type CPUSample struct {
	at    time.Time
	ticks map[string]int64
}

// clockTicks is USER_HZ, 100 on every Linux we run on.
const clockTicks = 100

// SampleCPU reads the CPU time of every process of /proc: those of pids
// under their names, Postgres's as postgres, the broker's as rabbitmq.
func SampleCPU(pids map[int]string) CPUSample {
	s := CPUSample{at: time.Now(), ticks: map[string]int64{}}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// comm is in parentheses and may hold spaces; fields follow ")".
		line := string(b)
		open, close := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
		if open < 0 || close < open {
			continue
		}
		comm := line[open+1 : close]
		fields := strings.Fields(line[close+1:])
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		var group string
		switch {
		case pids[pid] != "":
			group = pids[pid]
		case comm == "postgres":
			group = "postgres"
		case strings.HasPrefix(comm, "beam"):
			group = "rabbitmq"
		default:
			continue
		}
		s.ticks[group] += utime + stime
	}
	return s
}

// Since describes the CPU each group used since s, in % of one core,
// busiest first, and the machine's core count.
func (s CPUSample) Since(pids map[int]string) string {
	now := SampleCPU(pids)
	secs := now.at.Sub(s.at).Seconds()
	type use struct {
		name string
		pct  float64
	}
	var uses []use
	var total float64
	for name, t := range now.ticks {
		pct := float64(t-s.ticks[name]) / clockTicks / secs * 100
		if pct < 0 {
			continue // a process restarted in between
		}
		uses = append(uses, use{name, pct})
		total += pct
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].pct > uses[j].pct })
	parts := make([]string, 0, len(uses))
	for _, u := range uses {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", u.name, u.pct))
	}
	return fmt.Sprintf("CPU of %d cores (%.0f%% used): %s", runtime.NumCPU(), total, strings.Join(parts, ", "))
}
