package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics is one reading of a process's /metrics: each series by its name
// and labels as written there (`x{phase="claim"}`), and each name alone,
// summed over its labels.
type Metrics map[string]float64

// ReadMetrics reads the /metrics of the process at addr once.
func ReadMetrics(ctx context.Context, client *http.Client, addr string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return ParseMetrics(resp.Body)
}

// ParseMetrics reads metrics in Prometheus's text format.
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		cut := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || cut < 0 {
			continue
		}
		series := line[:cut]
		v, err := strconv.ParseFloat(line[cut+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[series] = v
		if name, _, labelled := strings.Cut(series, "{"); labelled {
			m[name] += v
		}
	}
	return m, s.Err()
}

// Sum sums the series of name whose labels contain match (e.g.
// `subscriber="storage"`; "" for all).
func (m Metrics) Sum(name, match string) float64 {
	if match == "" {
		return m[name]
	}
	var sum float64
	for series, v := range m {
		if strings.HasPrefix(series, name+"{") && strings.Contains(series, match) {
			sum += v
		}
	}
	return sum
}

// Since is what each series of m gained from before.
func (m Metrics) Since(before Metrics) Metrics {
	d := make(Metrics, len(m))
	for series, v := range m {
		d[series] = v - before[series]
	}
	return d
}

// Mean is the mean observation of histogram or summary name over its
// series with labels (`subscriber="billing"`; "" for none): its sum over
// its count, and false when it observed nothing.
func (m Metrics) Mean(name, labels string) (float64, bool) {
	series := func(part string) float64 {
		if labels == "" {
			return m[name+"_"+part]
		}
		return m[name+"_"+part+"{"+labels+"}"]
	}
	n := series("count")
	if n <= 0 {
		return 0, false
	}
	return series("sum") / n, true
}

// Quantile estimates quantile q of histogram name (without labels) from
// its cumulative buckets at bounds (their le as /metrics writes them),
// interpolating within a bucket: as coarse as the buckets. Past the last
// bound it answers the last.
func (m Metrics) Quantile(q float64, name string, bounds []string) float64 {
	want := q * m[name+"_count"]
	prevBound, prevCount := 0.0, 0.0
	for _, le := range bounds {
		bound, _ := strconv.ParseFloat(le, 64)
		n := m[name+`_bucket{le="`+le+`"}`]
		if n >= want {
			if n == prevCount {
				return bound
			}
			return prevBound + (bound-prevBound)*(want-prevCount)/(n-prevCount)
		}
		prevBound, prevCount = bound, n
	}
	return prevBound
}

// Metrics reads the process's /metrics once.
func (p *Proc) Metrics(ctx context.Context) (Metrics, error) {
	return ReadMetrics(ctx, http.DefaultClient, p.Addr)
}

// Metric reads one counter or gauge (summed over its labels) from the
// process's /metrics; found is false when the metric is not exposed. A
// name with labels (`x{phase="claim"}`) reads just that series.
func (p *Proc) Metric(ctx context.Context, name string) (value float64, found bool, err error) {
	m, err := p.Metrics(ctx)
	if err != nil {
		return 0, false, err
	}
	value, found = m[name]
	return value, found, nil
}

// SampleMetric reads the metric name (as Metric) every interval until stop
// is called, which returns the readings of the metric where it was
// exposed.
func (p *Proc) SampleMetric(ctx context.Context, name string, every time.Duration) (stop func() []float64) {
	stopc, done := make(chan struct{}), make(chan struct{})
	var samples []float64
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, found, err := p.Metric(ctx, name); err == nil && found {
				samples = append(samples, v)
			}
			select {
			case <-stopc:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() []float64 {
		close(stopc)
		<-done
		return samples
	}
}
