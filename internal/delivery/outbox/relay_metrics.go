package outbox

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's Prometheus series. The backlog's own gauges
// (epoch_outbox_pending, epoch_outbox_oldest_pending_age_seconds) are not
// among them: every worker exports those (opsmetrics), relay or not, so the
// backlog is watched while no relay runs.
type metrics struct {
	published, confirmed, failed prometheus.Counter
	openTxPID, openTxAge         prometheus.Gauge
	// phase times each step of a cycle (see cyclePhase*), so what holds
	// the relay's latency up can be read off /metrics.
	phase *prometheus.HistogramVec
	// claimWait is how long rows waited to be claimed: with the phases,
	// it splits a commit's way to the broker into waiting and working.
	claimWait prometheus.Histogram
}

// The phases of a relay cycle, as labels of epoch_relay_cycle_phase_seconds.
const (
	cyclePhaseClaim   = "claim"   // BEGIN, the partition locks and their rows: one round trip, every cycle
	cyclePhasePublish = "publish" // sending them until the last confirm
	cyclePhaseSettle  = "settle"  // deleting or trimming the rows with the COMMIT: one round trip
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "epoch_relay_published_total", Help: "Messages the outbox relay sent to the broker.",
		}),
		confirmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "epoch_relay_confirmed_total", Help: "Messages the broker confirmed (acked and routed).",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "epoch_relay_failed_total", Help: "Messages nacked, returned as unroutable, unconfirmed in time or lost with a connection; their rows stay.",
		}),
		openTxPID: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "epoch_outbox_oldest_open_transaction_pid", Help: "Backend pid of the oldest open writing transaction, whose outbox rows the relay cannot see yet (0: none).",
		}),
		openTxAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "epoch_outbox_oldest_open_transaction_age_seconds", Help: "Age of the oldest open writing transaction (0: none).",
		}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "epoch_relay_cycle_phase_seconds", Help: "Time of each phase of a relay cycle: claim (every cycle), then publish and settle (cycles that found rows).",
			Buckets: []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1},
		}, []string{"phase"}),
		claimWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "epoch_relay_claim_wait_seconds", Help: "Time from an outbox row's insert (in its command's transaction, just before the commit) to its claim by a relay cycle.",
			Buckets: []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5},
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.published, m.confirmed, m.failed, m.openTxPID, m.openTxAge, m.phase, m.claimWait} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register relay metrics: %w", err)
		}
	}
	return m, nil
}
