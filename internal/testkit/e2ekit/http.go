package e2ekit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// Answer is an HTTP response, read whole.
type Answer harness.Answer

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
	a, err := harness.Request(ctx, client, addr, method, path, token, body)
	return Answer(a), err
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
	m, err := harness.ReadMetrics(context.Background(), client, addr)
	if err != nil {
		return 0, err
	}
	return m.Sum(name, match), nil
}
