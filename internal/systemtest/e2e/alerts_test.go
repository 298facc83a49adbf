package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/syncbuf"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// The rules' `for:` in the test's copy: longer than one scrape interval, so
// one slow scrape fires nothing, and short enough for a test.
const (
	alertFor       = "5s"
	scrapeInterval = "3s"
)

// The shipped alert rules, run by a real Prometheus scraping the api and
// the workers: a minute of normal traffic leaves every rule silent, not
// even pending; then each rule's fault, injected for real, fires it.
func TestAlertRulesFireOnRealFaultsOnly(t *testing.T) {
	t.Parallel()
	promBin, err := exec.LookPath("prometheus")
	require.NoError(t, err, "Prometheus (Debian's prometheus package; scripts/test installs it)")
	s := newSystem(t, "alerts", "")
	s.worker.Kill()
	env := func(roles string) map[string]string {
		return map[string]string{
			"EPOCH_DATABASE_URL": s.apiEnv["EPOCH_DATABASE_URL"], "EPOCH_AMQP_URL": s.amqpURL,
			"EPOCH_DB_MAX_CONNS": "4", "EPOCH_WORKER_ROLES": roles, "EPOCH_RELAY_POLL_INTERVAL": "100ms",
			"EPOCH_HEAL_AFTER": "5s",
		}
	}
	relay := bin.Start(t, "worker", "alerts-relay", env("relay"))
	storageWorker := bin.Start(t, "worker", "alerts-storage", env("storage"))
	billingWorker := bin.Start(t, "worker", "alerts-billing", env("billing"))
	for _, w := range []*e2ekit.Proc{relay, storageWorker, billingWorker} {
		w.WaitReady(t, 30*time.Second)
	}
	prom := startPrometheus(t, promBin, s.api.Addr, []string{relay.Addr, storageWorker.Addr, billingWorker.Addr})
	prom.waitForTargets(t, 4)

	ctx := e2ekit.CtxFor(t, 8*time.Minute)
	token := s.newUser(t, "traffic")
	traffic := startTraffic(ctx, s, token)
	defer traffic.stop(t)

	// A minute of normal traffic: nothing fires, nothing is even pending.
	quiet := time.Now().Add(time.Minute)
	for time.Now().Before(quiet) {
		require.Empty(t, prom.alerts(t), "under normal traffic")
		time.Sleep(time.Second)
	}
	require.Positive(t, traffic.done.Load(), "commands landed meanwhile")
	t.Logf("a minute of normal traffic (%d commands): no alert pending or firing", traffic.done.Load())

	// The first dead letter since the workers started: a message naming no
	// stored event, published to the exchange.
	conn, err := amqp.Dial(s.amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	forged := fmt.Sprintf(`{"id":%q,"type":"file.uploaded","stream_type":"file","stream_id":%q,"version":1,"position":1,"occurred_at":"2026-01-01T00:00:00.000000Z","data":{"owner_id":%q,"name":"x","size_bytes":1,"content_type":"text/plain"}}`,
		uuid.NewString(), uuid.NewString(), uuid.NewString())
	require.NoError(t, ch.PublishWithContext(ctx, broker.Exchange, domain.FileUploaded, false, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: uuid.NewString(), Body: []byte(forged),
	}))
	// Both subscribers have it as a dead letter before the outside
	// consumer below starts on billing's queue, which could take the forged
	// copy first.
	e2ekit.Eventually(t, 20*time.Second, "both subscribers dead-letter the forged message", func() (bool, string) {
		var n int
		require.NoError(t, s.pool.QueryRow(ctx, "SELECT count(DISTINCT subscriber) FROM dead_letters WHERE reason = 'unknown_event'").Scan(&n))
		return n == 2, fmt.Sprint(n, " subscribers")
	})
	// Messages lost: a consumer outside Epoch takes some of billing's and
	// drops them.
	thief, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, thief.Qos(1, 0, false))
	msgs, err := thief.Consume(broker.QueueName("billing"), "thief", false, false, false, false, nil)
	require.NoError(t, err)
	var dropped atomic.Int64
	go func() {
		for d := range msgs {
			dropped.Add(1)
			_ = d.Ack(false)
		}
	}()
	e2ekit.Eventually(t, 20*time.Second, "the outside consumer takes messages", func() (bool, string) {
		return dropped.Load() >= 5, fmt.Sprint(dropped.Load(), " taken")
	})
	require.NoError(t, thief.Cancel("thief", false))
	t.Logf("an outside consumer dropped %d of billing's messages", dropped.Load())
	prom.waitFiring(t, 60*time.Second,
		alertIs("EpochNewDeadLetters", "subscriber", "billing", "reason", "unknown_event"),
		alertIs("EpochNewDeadLetters", "subscriber", "storage", "reason", "unknown_event"),
		alertIs("EpochDeadLetters", "subscriber", "billing"),
		alertIs("EpochMessagesHealed", "subscriber", "billing"))
	require.Empty(t, prom.matching(t, alertIs("EpochConsumerLag")), "healing brought billing back before it counts as behind")

	// billing blocked by a lock on its table, storage's worker stopped.
	lock, err := s.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = lock.Rollback(context.WithoutCancel(ctx)) }()
	_, err = lock.Exec(ctx, "LOCK TABLE billing_files IN EXCLUSIVE MODE")
	require.NoError(t, err)
	require.NoError(t, storageWorker.Signal(syscall.SIGTERM))
	<-storageWorker.Done()
	prom.waitFiring(t, 120*time.Second,
		alertIs("EpochConsumerLag", "subscriber", "billing"),
		alertIs("EpochConsumerLag", "subscriber", "storage"),
		alertIs("EpochWorkerDown", "instance", storageWorker.Addr))
	require.NoError(t, lock.Rollback(ctx))

	// The relay stopped.
	require.NoError(t, relay.Signal(syscall.SIGTERM))
	<-relay.Done()
	prom.waitFiring(t, 120*time.Second, alertIs("EpochOutboxStuck"), alertIs("EpochWorkerDown", "instance", relay.Addr))
}

// prometheus is a Prometheus process of a test, stopped (by its pid) when
// the test ends.
type prometheus struct {
	addr   string
	client *http.Client
}

// startPrometheus runs Prometheus on a port and data directory of its own,
// scraping api and workers every scrapeInterval, with a copy of
// alerts.yml whose `for:` are alertFor, evaluated every second.
func startPrometheus(t *testing.T, promBin, api string, workers []string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rules, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "prometheus", "alerts.yml"))
	require.NoError(t, err)
	forLine := regexp.MustCompile(`(?m)^(\s+for:\s+)\S+\s*$`)
	require.NotEmpty(t, forLine.FindAll(rules, -1))
	rules = forLine.ReplaceAll(rules, []byte("${1}"+alertFor))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o644))
	quoted := make([]string, len(workers))
	for i, w := range workers {
		quoted[i] = fmt.Sprintf("%q", w)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: epoch-api
    static_configs:
      - targets: [%[2]q]
  - job_name: epoch-worker
    static_configs:
      - targets: [%[3]s]
`, scrapeInterval, api, strings.Join(quoted, ", "))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644))

	p := &prometheus{addr: e2ekit.FreeAddr(t), client: &http.Client{Timeout: 5 * time.Second}}
	out := &syncbuf.Buffer{}
	cmd := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+p.addr, "--log.level=warn")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	e2ekit.Eventually(t, 30*time.Second, "Prometheus is ready", func() (bool, string) {
		resp, err := p.client.Get("http://" + p.addr + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return p
}

// get reads one answer of Prometheus's HTTP API into data.
func (p *prometheus) get(t *testing.T, path string, data any) {
	t.Helper()
	resp, err := p.client.Get("http://" + p.addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status, "GET %s", path)
	require.NoError(t, json.Unmarshal(body.Data, data))
}

// waitForTargets waits until n targets were scraped, all up, and the rules
// are loaded.
func (p *prometheus) waitForTargets(t *testing.T, n int) {
	t.Helper()
	e2ekit.Eventually(t, 30*time.Second, "every target scraped", func() (bool, string) {
		var data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		}
		p.get(t, "/api/v1/targets", &data)
		up := 0
		for _, tg := range data.ActiveTargets {
			if tg.Health == "up" {
				up++
			}
		}
		return up == n, fmt.Sprintf("%+v", data.ActiveTargets)
	})
	var rules struct {
		Groups []struct {
			Rules []struct{ Name string } `json:"rules"`
		} `json:"groups"`
	}
	p.get(t, "/api/v1/rules", &rules)
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Name)
		}
	}
	require.Contains(t, names, "EpochMessagesHealed", "the rules are loaded")
}

// alert is one alert Prometheus reports.
type alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (a alert) String() string {
	keys := slices.Sorted(maps.Keys(a.Labels))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if k != "alertname" && k != "severity" {
			parts = append(parts, k+"="+a.Labels[k])
		}
	}
	return fmt.Sprintf("%s{%s} %s", a.Labels["alertname"], strings.Join(parts, ","), a.State)
}

// alerts is every alert pending or firing now.
func (p *prometheus) alerts(t *testing.T) []alert {
	t.Helper()
	var data struct {
		Alerts []alert `json:"alerts"`
	}
	p.get(t, "/api/v1/alerts", &data)
	return data.Alerts
}

// alertIs matches an alert by name and labels (name, value pairs).
func alertIs(name string, labels ...string) func(alert) bool {
	return func(a alert) bool {
		if a.Labels["alertname"] != name {
			return false
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if a.Labels[labels[i]] != labels[i+1] {
				return false
			}
		}
		return true
	}
}

// matching is the alerts pending or firing now that match.
func (p *prometheus) matching(t *testing.T, match func(alert) bool) []alert {
	t.Helper()
	var out []alert
	for _, a := range p.alerts(t) {
		if match(a) {
			out = append(out, a)
		}
	}
	return out
}

// waitFiring waits, at most d, until an alert matching each of wants is
// firing.
func (p *prometheus) waitFiring(t *testing.T, d time.Duration, wants ...func(alert) bool) {
	t.Helper()
	start := time.Now()
	e2ekit.Eventually(t, d, "the alerts fire", func() (bool, string) {
		all := p.alerts(t)
		for _, want := range wants {
			if !slices.ContainsFunc(all, func(a alert) bool { return want(a) && a.State == "firing" }) {
				return false, fmt.Sprint(all)
			}
		}
		return true, ""
	})
	time.Sleep(time.Second) // Eventually polls every 20 ms: not Prometheus
	var firing []string
	for _, a := range p.alerts(t) {
		if a.State == "firing" {
			firing = append(firing, a.String())
		}
	}
	t.Logf("after %s, firing: %s", time.Since(start).Round(time.Second), strings.Join(firing, "; "))
}

// traffic uploads files (deleting every third) until stopped, one command
// at a time.
type traffic struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   atomic.Int64
	failed atomic.Int64
}

func startTraffic(ctx context.Context, s *system, token string) *traffic {
	ctx, cancel := context.WithCancel(ctx)
	tr := &traffic{cancel: cancel}
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			a, err := e2ekit.Request(ctx, s.http, s.api.Addr, "POST", "/v1/files", token, map[string]any{"name": fmt.Sprint("t", i), "size_bytes": 100 + i})
			if err != nil || a.Status != http.StatusCreated {
				tr.failed.Add(1)
			} else if tr.done.Add(1); i%3 == 0 {
				if obj, err := a.Object(); err == nil {
					_, _ = e2ekit.Request(ctx, s.http, s.api.Addr, "DELETE", fmt.Sprint("/v1/files/", obj["id"]), token, nil)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return tr
}

func (tr *traffic) stop(t *testing.T) {
	tr.cancel()
	tr.wg.Wait()
	t.Logf("traffic: %d commands, %d failed", tr.done.Load(), tr.failed.Load())
}
