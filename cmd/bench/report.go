package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// figure is one line of the report: a measured value, the ceiling measured
// beside it in the same run, and whether the target holds.
type figure struct {
	Figure      string         `json:"figure"`
	Name        string         `json:"name"`
	Concurrency int            `json:"concurrency,omitempty"`
	Value       float64        `json:"value"`
	Unit        string         `json:"unit"`
	Ceiling     *float64       `json:"ceiling,omitempty"`
	Ratio       *float64       `json:"ratio,omitempty"`
	Target      string         `json:"target,omitempty"`
	Pass        *bool          `json:"pass,omitempty"`
	LimitedBy   string         `json:"limited_by,omitempty"`
	Detail      map[string]any `json:"detail,omitempty"`
	Error       string         `json:"error,omitempty"`
}

func (f *figure) withCeiling(c float64) *figure {
	f.Ceiling = ptr(round(c))
	if c != 0 {
		f.Ratio = ptr(round3(f.Value / c))
	}
	return f
}

func (f *figure) judge(target string, pass bool) *figure {
	f.Target, f.Pass = target, ptr(pass)
	return f
}

func ptr[T any](v T) *T { return &v }

func round(v float64) float64 {
	if math.Abs(v) >= 100 {
		return math.Round(v)
	}
	return round3(v)
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// report collects the figures and prints each as it comes.
type report struct {
	figures []*figure
	out     *json.Encoder
}

func (r *report) add(f *figure) {
	f.Value = round(f.Value)
	r.figures = append(r.figures, f)
	_ = r.out.Encode(f)
}

func (r *report) fail(fig, name string, err error) {
	r.add(&figure{Figure: fig, Name: name, Error: err.Error()})
}

// failed reports whether any figure could not be measured.
func (r *report) failed() bool {
	for _, f := range r.figures {
		if f.Error != "" {
			return true
		}
	}
	return false
}

// machine describes where the run happened.
func machine(ctx context.Context, e *env) map[string]string {
	m := harness.Machine()
	m["postgres"], m["rabbitmq"] = e.versions(ctx)
	return m
}

// analysisHeading starts the hand-written part of BENCHMARKS.md, which a
// rewrite keeps.
const analysisHeading = "## Analysis"

// writeMarkdown rewrites BENCHMARKS.md with the table of this run.
func writeMarkdown(path string, r *report, mach map[string]string, command string, started time.Time, notes []string) error {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Made by `cmd/bench`, which builds the api and worker, gives them their own\n")
	b.WriteString("database and RabbitMQ vhost, drives them over HTTP and AMQP, and measures each\n")
	b.WriteString("figure beside its ceiling (the same work without the system) in the same run.\n")
	b.WriteString("Targets are ratios to those ceilings (issue 4); absolute numbers are for scale.\n")
	b.WriteString("B11–B13 run on the three-node RabbitMQ cluster of scripts/rabbitmq-cluster, on\n")
	b.WriteString("the same machine, with their ceilings taken on that cluster.\n\n")
	fmt.Fprintf(&b, "Command: `%s`  \n", command)
	fmt.Fprintf(&b, "Date: %s (took %s)  \n", started.UTC().Format(time.RFC3339), time.Since(started).Round(time.Second))
	keys := []string{"cpu", "cpus", "memory", "os", "go", "postgres", "rabbitmq"}
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if mach[k] != "" {
			parts = append(parts, k+": "+mach[k])
		}
	}
	fmt.Fprintf(&b, "Machine: %s\n\n", strings.Join(parts, "; "))
	b.WriteString("| figure | what | value | ceiling | ratio | target | pass | what limited it |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, f := range r.figures {
		name := f.Name
		if f.Concurrency > 0 {
			name += fmt.Sprintf(" (c=%d)", f.Concurrency)
		}
		value := decimal(f.Value) + " " + f.Unit
		if f.Error != "" {
			value = "**error**: " + strings.ReplaceAll(firstLine(f.Error), "|", "/")
		}
		ceiling, ratio, pass := "", "", ""
		if f.Ceiling != nil {
			ceiling = decimal(*f.Ceiling) + " " + f.Unit
		}
		if f.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *f.Ratio)
		}
		if f.Pass != nil {
			pass = map[bool]string{true: "yes", false: "**no**"}[*f.Pass]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", f.Figure, name, value, ceiling, ratio,
			strings.ReplaceAll(f.Target, "|", "/"), pass, strings.ReplaceAll(f.LimitedBy, "|", "/"))
	}
	b.WriteString("\n## How each figure is measured\n\n")
	b.WriteString(methodNotes)
	if len(notes) > 0 {
		b.WriteString("\n## Notes from this run\n\n")
		for _, n := range notes {
			b.WriteString("- " + n + "\n")
		}
	}
	b.WriteString("\n## Raw figure lines\n\n```\n")
	for _, f := range r.figures {
		line, _ := json.Marshal(f)
		b.Write(line)
		b.WriteString("\n")
	}
	b.WriteString("```\n")
	// The analysis is written by people; keep it across runs.
	if old, err := os.ReadFile(path); err == nil {
		if i := strings.Index(string(old), analysisHeading); i >= 0 {
			b.WriteString("\n" + string(old[i:]))
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// decimal writes v without an exponent (%v gives 3.291152e+06 from seven
// digits on), as the raw JSON lines do.
func decimal(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > 200 {
		line = line[:200] + "…"
	}
	return line
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// slope is the least-squares slope of y over x.
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
