package consumer

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one subscriber's series. The vectors are shared by every
// consumer registered on one registry, labelled by subscriber (a name, not
// an id: a handful of values).
type metrics struct {
	processed, duplicates prometheus.Counter
	deadLettered          *prometheus.CounterVec // by reason, curried on subscriber
	position, lag         prometheus.Gauge
	batch                 prometheus.Observer
}

func newMetrics(reg prometheus.Registerer, subscriber string) (*metrics, error) {
	processed, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "epoch_consumer_processed_total", Help: "Events a remote subscriber applied (new to its inbox).",
	}, []string{"subscriber"}))
	if err != nil {
		return nil, err
	}
	duplicates, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "epoch_consumer_duplicates_total", Help: "Deliveries of events the subscriber had applied already (inbox no-ops).",
	}, []string{"subscriber"}))
	if err != nil {
		return nil, err
	}
	dead, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "epoch_consumer_dead_lettered_total",
		Help: "Dead letters kept in dead_letters, each counted once however often its message arrives: by reason (unknown_event, mismatch, malformed, failed).",
	}, []string{"subscriber", "reason"}))
	if err != nil {
		return nil, err
	}
	position, err := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "epoch_consumer_position", Help: "Highest event position the subscriber applied since the worker started.",
	}, []string{"subscriber"}))
	if err != nil {
		return nil, err
	}
	lag, err := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "epoch_consumer_lag_positions",
		Help: "Committed positions past the last one the subscriber applied, while messages flow; 0 once its queue has been idle for a second.",
	}, []string{"subscriber"}))
	if err != nil {
		return nil, err
	}
	batch, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "epoch_consumer_batch_seconds",
		Help:    "Time of a batch's committed transaction, from taking a connection to the COMMIT's answer. The inbox rows' handled_at is stamped in its first round trip.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
	}, []string{"subscriber"}))
	if err != nil {
		return nil, err
	}
	l := prometheus.Labels{"subscriber": subscriber}
	deadBy, err := dead.CurryWith(l)
	if err != nil {
		return nil, err
	}
	// Every reason's series is there from the start, at 0: the first dead
	// letter after a start is then an increase, which a series born at 1
	// would not show.
	for _, reason := range []string{ReasonUnknownEvent, ReasonMismatch, ReasonMalformed, ReasonFailed} {
		deadBy.WithLabelValues(reason)
	}
	return &metrics{
		processed: processed.With(l), duplicates: duplicates.With(l), deadLettered: deadBy,
		position: position.With(l), lag: lag.With(l), batch: batch.With(l),
	}, nil
}

// register registers c on reg, or returns the equal collector another
// consumer registered first. A nil reg registers nothing.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register consumer metrics: %w", err)
	}
	return c, nil
}
