package e2ekit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Answer is an HTTP response, read whole.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// Position is the answer's Epoch-Position.
func (a Answer) Position(t testing.TB) int64 {
	t.Helper()
	p, err := strconv.ParseInt(a.Header.Get("Epoch-Position"), 10, 64)
	require.NoError(t, err, "Epoch-Position header: %q", a.Header.Get("Epoch-Position"))
	return p
}

// JSON decodes the body as an object, numbers as json.Number.
func (a Answer) JSON(t testing.TB) map[string]any {
	t.Helper()
	m, err := a.Object()
	require.NoError(t, err)
	return m
}

// Object decodes the body as an object, numbers as json.Number.
func (a Answer) Object() (map[string]any, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(a.Body))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("body %q: %w", a.Body, err)
	}
	return m, nil
}

// Request sends one request to the process at addr as token (none: no
// Authorization) with body as JSON (nil: none), and reads the answer
// whatever its status; for goroutines that must not fail a test.
func Request(ctx context.Context, client *http.Client, addr, method, path, token string, body any) (Answer, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return Answer{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return Answer{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return Answer{}, fmt.Errorf("%s %s on %s: %w", method, path, addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Answer{}, fmt.Errorf("%s %s on %s: read the answer: %w", method, path, addr, err)
	}
	return Answer{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// Call is Request that requires the status want.
func Call(t testing.TB, client *http.Client, addr string, want int, method, path, token string, body any) Answer {
	t.Helper()
	a, err := Request(context.Background(), client, addr, method, path, token, body)
	require.NoError(t, err)
	require.Equal(t, want, a.Status, "%s %s on %s: %s", method, path, addr, a.Body)
	return a
}

// UsagePath is GET /v1/usage's path over [from, to), with min_position
// when it is positive.
func UsagePath(from, to time.Time, minPosition int64) string {
	q := url.Values{}
	q.Set("from", from.UTC().Format(time.RFC3339Nano))
	q.Set("to", to.UTC().Format(time.RFC3339Nano))
	if minPosition > 0 {
		q.Set("min_position", fmt.Sprint(minPosition))
	}
	return "/v1/usage?" + q.Encode()
}

// Metric sums the samples of a Prometheus metric of the process at addr
// whose labels contain match (e.g. `subscriber="storage"`; "" for all).
func Metric(t testing.TB, client *http.Client, addr, name, match string) float64 {
	t.Helper()
	v, err := ReadMetric(client, addr, name, match)
	require.NoError(t, err)
	return v
}

// ReadMetric is Metric for goroutines that must not fail a test.
func ReadMetric(client *http.Client, addr, name, match string) (float64, error) {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || !strings.Contains(line, match) {
			continue
		}
		if rest := line[len(name):]; rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}
