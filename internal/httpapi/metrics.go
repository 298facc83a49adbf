package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// routeUnmatched is the route label of a request no pattern matched (the
// 404 and 405 answered by ServeHTTP).
const routeUnmatched = "unmatched"

// metrics: no ids as labels, only the route pattern and the status.
type metrics struct {
	commands *prometheus.CounterVec
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		// Kept as it was beside requests, so that what reads it need not change.
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "epoch_api_commands_total",
			Help: "Commands (POST, PUT, DELETE) answered, by route and status.",
		}, []string{"route", "status"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "epoch_api_requests_total",
			Help: `Requests of every method answered, by method, route (the pattern's path, or "unmatched") and status.`,
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "epoch_api_request_duration_seconds",
			Help:    "Time to answer a request, by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.commands, m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe records one answered request of a registered pattern; method is
// the request's (a GET pattern answers HEAD too).
func (m *metrics) observe(pattern, method string, status int, took time.Duration) {
	code := strconv.Itoa(status)
	m.duration.WithLabelValues(pattern).Observe(took.Seconds())
	if isCommand(pattern) {
		m.commands.WithLabelValues(pattern, code).Inc()
	}
	_, path, _ := strings.Cut(pattern, " ")
	m.requests.WithLabelValues(methodLabel(method), path, code).Inc()
}

// observeUnmatched records a request no pattern matched.
func (m *metrics) observeUnmatched(method string, status int) {
	m.requests.WithLabelValues(methodLabel(method), routeUnmatched, strconv.Itoa(status)).Inc()
}

// methodLabel keeps the method label to the standard methods: a client
// can send any token as a method, and each would be a new series.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "other"
}

func isCommand(pattern string) bool {
	method, _, _ := strings.Cut(pattern, " ")
	return method == "POST" || method == "PUT" || method == "DELETE"
}
