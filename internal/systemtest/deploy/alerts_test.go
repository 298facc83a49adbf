package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const alertsPath = "deploy/prometheus/alerts.yml"

// toBeExported are metrics the alert rules use before the code exports
// them. A name leaves this list in the change that registers it: the test
// fails for a listed name the code already has.
var toBeExported = []string{}

type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadAlerts(t *testing.T) alertRules {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, alertsPath))
	require.NoError(t, err)
	var r alertRules
	require.NoError(t, yaml.Unmarshal(data, &r))
	require.NotEmpty(t, r.Groups)
	return r
}

var (
	epochMetric = regexp.MustCompile(`\bepoch_[a-z0-9_]+`)
	upJob       = regexp.MustCompile(`\bup\{job="([^"]+)"\}`)
)

// TestAlertMetricsExist: every epoch_ metric an alert rule names is a
// metric name the Go code spells out (so renaming a metric breaks this
// test, not the alert, silently), and every job an `up` rule names is a
// scrape job of prometheus.yml.
func TestAlertMetricsExist(t *testing.T) {
	t.Parallel()
	rules := loadAlerts(t)
	registered := metricNamesInCode(t)
	jobs := scrapeJobs(t)

	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "group %s: a rule without a name", g.Name)
			require.NotEmpty(t, r.For, "%s has no for:", r.Alert)
			require.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], "%s severity", r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], "%s summary", r.Alert)
			require.NotEmpty(t, r.Annotations["description"], "%s description", r.Alert)
			for _, m := range epochMetric.FindAllString(r.Expr, -1) {
				if slices.Contains(toBeExported, m) {
					continue
				}
				// A histogram's series carry suffixes to its registered name.
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && registered[b] {
						base = b
					}
				}
				require.True(t, registered[base], "%s uses %s, which no Go source outside tests names", r.Alert, m)
			}
			for _, m := range upJob.FindAllStringSubmatch(r.Expr, -1) {
				require.Contains(t, jobs, m[1], "%s watches job %s, which prometheus.yml does not scrape", r.Alert, m[1])
			}
		}
	}
	for _, m := range toBeExported {
		require.False(t, registered[m], "%s is exported now: take it off toBeExported", m)
	}
}

// metricNamesInCode collects the string literals "epoch_..." of the Go
// sources, tests left out: every metric is registered by its full name
// (prometheus.Opts{Name: "epoch_..."}), never assembled from parts.
func metricNamesInCode(t *testing.T) map[string]bool {
	t.Helper()
	literal := regexp.MustCompile(`"(epoch_[a-z0-9_]+)"`)
	names := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "tools") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range literal.FindAllSubmatch(src, -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	require.NoError(t, err)
	require.True(t, names["epoch_outbox_pending"], "the walk found the metric registrations")
	return names
}

func scrapeJobs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "deploy/prometheus/prometheus.yml"))
	require.NoError(t, err)
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	require.NoError(t, yaml.Unmarshal(data, &cfg))
	require.Contains(t, cfg.RuleFiles, filepath.Base(alertsPath))
	var jobs []string
	for _, s := range cfg.ScrapeConfigs {
		jobs = append(jobs, s.JobName)
	}
	return jobs
}
