package httpapi

import (
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics: no ids as labels, only the route pattern and the status.
type metrics struct {
	commands *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "epoch_api_commands_total",
			Help: "Commands (POST, PUT, DELETE) answered, by route and status.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "epoch_api_request_duration_seconds",
			Help:    "Time to answer a request, by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.commands, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(route string, command bool, status int, took time.Duration) {
	m.duration.WithLabelValues(route).Observe(took.Seconds())
	if command {
		m.commands.WithLabelValues(route, strconv.Itoa(status)).Inc()
	}
}

func isCommand(pattern string) bool {
	method, _, _ := strings.Cut(pattern, " ")
	return method == "POST" || method == "PUT" || method == "DELETE"
}
