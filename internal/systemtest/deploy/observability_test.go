package deploy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/harness"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// The `observability` profile: Prometheus with the shipped scrape
// configuration and alert rules, Grafana with its provisioned data source
// and dashboards, and Jaeger for traces.
const (
	observabilityProfile = "observability"
	prometheusService    = "prometheus"
	grafanaService       = "grafana"
	jaegerService        = "jaeger"

	prometheusDir     = "deploy/prometheus"
	grafanaDir        = "deploy/grafana"
	grafanaDatasource = "deploy/grafana/provisioning/datasources/prometheus.yml"
	grafanaProvider   = "deploy/grafana/provisioning/dashboards/epoch.yml"
	dashboardPath     = "deploy/grafana/dashboards/epoch.json"
)

// prometheusOwnSeries are series Prometheus makes for each target, which
// no process exports.
var prometheusOwnSeries = []string{"up"}

type dashboard struct {
	UID    string           `json:"uid"`
	Title  string           `json:"title"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	Datasource *panelDatasource `json:"datasource"`
	Targets    []struct {
		RefID      string           `json:"refId"`
		Expr       string           `json:"expr"`
		Datasource *panelDatasource `json:"datasource"`
	} `json:"targets"`
	// A collapsed row holds its panels.
	Panels []dashboardPanel `json:"panels"`
}

type panelDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func loadDashboard(t *testing.T, path string) dashboard {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, path))
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(data, &d), "%s is JSON", path)
	require.NotEmpty(t, d.UID, "%s has a uid, by which links reach it", path)
	require.NotEmpty(t, d.Title, path)
	return d
}

// graphs are a dashboard's panels that show queries, the rows' own
// panels included, and not the rows.
func (d dashboard) graphs() []dashboardPanel {
	var out []dashboardPanel
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

// panelExpr is one query of a dashboard panel.
type panelExpr struct {
	id               int
	panel, ref, expr string
}

func (d dashboard) exprs(t *testing.T) []panelExpr {
	t.Helper()
	var out []panelExpr
	for _, p := range d.graphs() {
		require.NotEmpty(t, p.Targets, "panel %q shows no query", p.Title)
		for _, q := range p.Targets {
			require.NotEmpty(t, strings.TrimSpace(q.Expr), "panel %q, query %s is empty", p.Title, q.RefID)
			out = append(out, panelExpr{p.ID, p.Title, q.RefID, q.Expr})
		}
	}
	require.NotEmpty(t, out)
	return out
}

var (
	seriesName = regexp.MustCompile(`\b(epoch_[a-z0-9_]+|up)\b`)
	exactJob   = regexp.MustCompile(`\bjob="([^"]+)"`)
)

// TestDashboardExpressionsParse: promtool, the one of Debian's prometheus
// package that scripts/test installs, parses every query of the dashboard,
// each written as an alert rule's expression; and every query reads the
// metrics of the api or the workers, by the jobs prometheus.yml scrapes.
func TestDashboardExpressionsParse(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool (Debian's prometheus package; scripts/test installs it)")
	d := loadDashboard(t, dashboardPath)
	jobs := scrapeJobs(t)

	type rule struct {
		Alert string `yaml:"alert"`
		Expr  string `yaml:"expr"`
	}
	var rules []rule
	for _, e := range d.exprs(t) {
		// Named by panel id and query, which promtool prints with an error.
		rules = append(rules, rule{Alert: fmt.Sprintf("Panel%d%s", e.id, e.ref), Expr: e.expr})
		require.NotEmpty(t, seriesName.FindAllString(e.expr, -1), "panel %q, query %s reads no metric of Epoch's", e.panel, e.ref)
		for _, m := range exactJob.FindAllStringSubmatch(e.expr, -1) {
			require.Contains(t, jobs, m[1], "panel %q, query %s reads job %s, which prometheus.yml does not scrape", e.panel, e.ref, m[1])
		}
	}
	file := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	data, err := yaml.Marshal(file)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "dashboard.yml")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	require.NoError(t, err, "promtool check rules on the dashboard's queries:\n%s\n%s", out, data)
	require.Contains(t, string(out), fmt.Sprintf("SUCCESS: %d rules found", len(rules)), "%s", out)
}

// TestDashboardMetricsExported runs an api and a worker with every role,
// as the compose services together are, and reads their /metrics until
// every series the dashboard's queries name is there: a metric renamed
// or dropped in the code then breaks this test rather than the panel,
// silently. The names are checked as exported, a histogram's _bucket
// included; series that appear only once something happened (a relay
// cycle, a request) appear within moments of the start.
func TestDashboardMetricsExported(t *testing.T) {
	t.Parallel()
	want := map[string][]string{} // series name: the panels that read it
	for _, e := range loadDashboard(t, dashboardPath).exprs(t) {
		for _, m := range seriesName.FindAllString(e.expr, -1) {
			if !slices.Contains(prometheusOwnSeries, m) && !slices.Contains(want[m], e.panel) {
				want[m] = append(want[m], e.panel)
			}
		}
	}

	bin, err := e2ekit.Build()
	require.NoError(t, err)
	t.Cleanup(bin.Remove)
	_, dbURL := testdb.New(t)
	amqpURL := testbroker.New(t)
	common := map[string]string{"EPOCH_DATABASE_URL": dbURL, "EPOCH_AMQP_URL": amqpURL, "EPOCH_DB_MAX_CONNS": "4"}
	workerEnv := map[string]string{"EPOCH_WORKER_ROLES": strings.Join(workers, ","), "EPOCH_RELAY_POLL_INTERVAL": "100ms"}
	apiEnv := map[string]string{"EPOCH_ADMIN_TOKEN": "dashboard-test-token"}
	for k, v := range common {
		workerEnv[k], apiEnv[k] = v, v
	}
	// The database is migrated already, so neither waits for the other;
	// the worker declares the topology on the test's vhost itself.
	worker := bin.Start(t, "worker", "dashboard-worker", workerEnv)
	api := bin.Start(t, "api", "dashboard-api", apiEnv)
	worker.WaitReady(t, 30*time.Second)
	api.WaitReady(t, 30*time.Second)

	ctx := e2ekit.CtxFor(t, time.Minute)
	client := &http.Client{Timeout: 10 * time.Second}
	var missing []string
	err = harness.WaitFor(ctx, 30*time.Second, 250*time.Millisecond, func() (bool, error) {
		exported := map[string]bool{}
		for _, p := range []*e2ekit.Proc{api, worker} {
			m, err := harness.ReadMetrics(ctx, client, p.Addr)
			if err != nil {
				return false, fmt.Errorf("%s's /metrics: %w", p.Name, err)
			}
			for series := range m {
				name, _, _ := strings.Cut(series, "{")
				exported[name] = true
			}
		}
		missing = missing[:0]
		for name, panels := range want {
			if !exported[name] {
				missing = append(missing, fmt.Sprintf("%s (panels %q)", name, panels))
			}
		}
		return len(missing) == 0, nil
	})
	slices.Sort(missing)
	require.NoError(t, err, "series the dashboard reads that neither the api nor the worker exports:\n%s", strings.Join(missing, "\n"))
	t.Logf("the api and the worker export the %d series the dashboard reads", len(want))
}

// promConfig is what the tests read of deploy/prometheus/prometheus.yml.
type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
		DNSSDConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
	} `yaml:"scrape_configs"`
}

// TestComposeObservabilityProfile checks the `observability` profile:
// Prometheus on the shipped configuration, which scrapes every api and
// worker service of the compose file under the job the alert rules watch
// (the default ones as fixed targets, the other profiles' as names found
// while they run); Grafana on Prometheus with the repository's
// provisioning; Jaeger receiving OTLP; and what each mounts from the
// repository is there.
func TestComposeObservabilityProfile(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool (Debian's prometheus package; scripts/test installs it)")
	f := loadCompose(t)

	for _, name := range []string{prometheusService, grafanaService, jaegerService} {
		s := f.Services[name]
		require.Equal(t, []string{observabilityProfile}, s.Profiles, name)
		for _, v := range s.Volumes {
			if src, _, ok := strings.Cut(v, ":"); ok && strings.HasPrefix(src, "./") {
				_, err := os.Stat(filepath.Join(root, src))
				require.NoError(t, err, "%s mounts %s from the repository", name, src)
				require.True(t, strings.HasSuffix(v, ":ro"), "%s mounts the repository's %s read-only", name, src)
			} else {
				require.Contains(t, f.Volumes, src, "%s keeps %s in a named volume", name, v)
			}
		}
	}

	prom := f.Services[prometheusService]
	require.True(t, strings.HasPrefix(prom.Image, "prom/prometheus:v"), "prometheus image %q", prom.Image)
	require.Contains(t, prom.Volumes, "./"+prometheusDir+":/etc/prometheus:ro", "the image reads /etc/prometheus/prometheus.yml")
	require.Equal(t, []string{"127.0.0.1:9090:9090"}, prom.Ports)
	require.Contains(t, prom.Healthcheck.Test, "http://127.0.0.1:9090/-/ready")
	out, err := exec.Command(promtool, "check", "config", filepath.Join(root, prometheusDir, "prometheus.yml")).CombinedOutput()
	require.NoError(t, err, "promtool check config:\n%s", out)

	data, err := os.ReadFile(filepath.Join(root, prometheusDir, "prometheus.yml"))
	require.NoError(t, err)
	var cfg promConfig
	require.NoError(t, yaml.Unmarshal(data, &cfg))
	require.Equal(t, []string{filepath.Base(alertsPath)}, cfg.RuleFiles, "the alert rules are loaded")
	static, found := map[string]string{}, map[string]string{} // target: job
	for _, sc := range cfg.ScrapeConfigs {
		for _, c := range sc.StaticConfigs {
			for _, target := range c.Targets {
				static[target] = sc.JobName
			}
		}
		for _, c := range sc.DNSSDConfigs {
			require.Equal(t, "A", c.Type, "job %s finds %s by address", sc.JobName, c.Names)
			for _, name := range c.Names {
				found[net.JoinHostPort(name, fmt.Sprint(c.Port))] = sc.JobName
			}
		}
	}
	var scraped []string
	for name, s := range f.Services {
		if s.Environment["EPOCH_DECLARE_TOPOLOGY"] == "only" || len(s.Command) != 1 {
			continue // a one-shot that serves nothing, or not Epoch's
		}
		job := map[string]string{"api": "epoch-api", "worker": "epoch-worker"}[s.Command[0]]
		if job == "" {
			continue
		}
		_, port, err := net.SplitHostPort(s.Environment["EPOCH_HTTP_ADDR"])
		require.NoError(t, err, "%s's EPOCH_HTTP_ADDR", name)
		target := net.JoinHostPort(name, port)
		if len(s.Profiles) == 0 {
			// Down, it is a target that is down: EpochAPIDown, EpochWorkerDown.
			require.Equal(t, job, static[target], "prometheus.yml scrapes %s as a fixed target of job %s", target, job)
		} else {
			// Not started with its profile, it is no target at all.
			require.Equal(t, job, found[target], "prometheus.yml scrapes %s as a name of job %s", target, job)
		}
		scraped = append(scraped, target)
	}
	require.ElementsMatch(t, scraped, append(keys(static), keys(found)...), "prometheus.yml scrapes the compose file's api and workers and nothing else")

	grafana := f.Services[grafanaService]
	require.True(t, strings.HasPrefix(grafana.Image, "grafana/grafana:"), "grafana image %q", grafana.Image)
	require.Equal(t, []string{"127.0.0.1:3000:3000"}, grafana.Ports)
	require.Contains(t, grafana.Healthcheck.Test, "http://127.0.0.1:3000/api/health")
	require.Contains(t, grafana.Volumes, "./"+grafanaDir+"/provisioning:/etc/grafana/provisioning:ro")
	require.NotEmpty(t, grafana.Environment["GF_SECURITY_ADMIN_USER"])
	require.True(t, strings.HasPrefix(grafana.Environment["GF_SECURITY_ADMIN_PASSWORD"], "dev-"),
		"Grafana's password is a development value, as the header of docker-compose.yml lists them")
	require.Equal(t, "service_healthy", grafana.DependsOn[prometheusService].Condition)

	jaeger := f.Services[jaegerService]
	require.True(t, strings.HasPrefix(jaeger.Image, "jaegertracing/all-in-one:"), "jaeger image %q", jaeger.Image)
	require.Equal(t, "true", jaeger.Environment["COLLECTOR_OTLP_ENABLED"])
	require.ElementsMatch(t, []string{"127.0.0.1:16686:16686", "127.0.0.1:4317:4317", "127.0.0.1:4318:4318"}, jaeger.Ports,
		"the UI, and OTLP over gRPC and HTTP")
}

// TestGrafanaProvisioning: the data source Grafana is given is the
// profile's Prometheus, the dashboard provider reads the directory compose
// mounts the repository's dashboards at, and every dashboard there is JSON
// whose panels query that data source.
func TestGrafanaProvisioning(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)
	grafana := f.Services[grafanaService]

	data, err := os.ReadFile(filepath.Join(root, grafanaDatasource))
	require.NoError(t, err)
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string `yaml:"name"`
			UID       string `yaml:"uid"`
			Type      string `yaml:"type"`
			Access    string `yaml:"access"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	require.NoError(t, yaml.Unmarshal(data, &ds), grafanaDatasource)
	require.Equal(t, 1, ds.APIVersion)
	require.Len(t, ds.Datasources, 1)
	source := ds.Datasources[0]
	require.Equal(t, "prometheus", source.Type)
	require.NotEmpty(t, source.UID, "the dashboards name their data source by uid")
	require.Equal(t, "proxy", source.Access, "Grafana's server, on the compose network, queries Prometheus, not the browser")
	u, err := url.Parse(source.URL)
	require.NoError(t, err)
	require.Equal(t, prometheusService+":9090", u.Host, "the data source is the profile's Prometheus")
	require.Contains(t, f.Services[prometheusService].Ports, "127.0.0.1:9090:9090")

	data, err = os.ReadFile(filepath.Join(root, grafanaProvider))
	require.NoError(t, err)
	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	require.NoError(t, yaml.Unmarshal(data, &dp), grafanaProvider)
	require.Equal(t, 1, dp.APIVersion)
	require.Len(t, dp.Providers, 1)
	provider := dp.Providers[0]
	require.Equal(t, "file", provider.Type)
	// The repository's directory mounted where the provider reads.
	var dir string
	for _, v := range grafana.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == provider.Options.Path {
			dir = parts[0]
		}
	}
	require.NotEmpty(t, dir, "compose mounts a directory of the repository at %s, where the provider reads", provider.Options.Path)
	require.Equal(t, "./"+filepath.Dir(dashboardPath), dir)

	files, err := filepath.Glob(filepath.Join(root, dir, "*.json"))
	require.NoError(t, err)
	require.Contains(t, files, filepath.Join(root, dashboardPath))
	uids := map[string]string{}
	for _, file := range files {
		rel, err := filepath.Rel(root, file)
		require.NoError(t, err)
		d := loadDashboard(t, rel)
		require.Empty(t, uids[d.UID], "%s and %s share uid %s", rel, uids[d.UID], d.UID)
		uids[d.UID] = rel
		ids := map[int]bool{}
		for _, p := range d.graphs() {
			require.False(t, ids[p.ID], "%s: two panels have id %d", rel, p.ID)
			ids[p.ID] = true
			require.NotNil(t, p.Datasource, "%s: panel %q names no data source", rel, p.Title)
			require.Equal(t, panelDatasource{Type: source.Type, UID: source.UID}, *p.Datasource, "%s: panel %q", rel, p.Title)
			for _, q := range p.Targets {
				if q.Datasource != nil {
					require.Equal(t, *p.Datasource, *q.Datasource, "%s: panel %q, query %s", rel, p.Title, q.RefID)
				}
			}
		}
	}
}
