package deploy

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// root is the repository root, relative to this package's directory (where
// go test runs).
const root = "../.."

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Restart     string            `yaml:"restart"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	require.NoError(t, err)
	var f composeFile
	require.NoError(t, yaml.Unmarshal(data, &f))
	return f
}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)

	require.ElementsMatch(t, []string{"postgres", "rabbitmq", "api", "worker"}, keys(f.Services))
	for name, s := range f.Services {
		require.NotNil(t, s.Healthcheck, "service %s has no health check", name)
		require.NotEmpty(t, s.Healthcheck.Test, "service %s has an empty health check", name)
		require.Contains(t, []string{"on-failure", "unless-stopped", "always"}, s.Restart, "service %s restart policy", name)
	}

	require.Equal(t, "postgres:15", f.Services["postgres"].Image)
	require.Contains(t, f.Services["postgres"].Healthcheck.Test, "pg_isready")
	require.NotEmpty(t, f.Services["postgres"].Volumes, "postgres keeps its data in a volume")

	rabbit := f.Services["rabbitmq"]
	require.True(t, strings.HasPrefix(rabbit.Image, "rabbitmq:") && strings.HasSuffix(rabbit.Image, "-management"),
		"rabbitmq image %q must carry the management console", rabbit.Image)
	require.ElementsMatch(t, []string{"5672:5672", "15672:15672"}, rabbit.Ports)
	require.Equal(t, []string{"CMD", "rabbitmq-diagnostics", "-q", "ping"}, rabbit.Healthcheck.Test)
}

// TestComposeBinaries checks the api and worker services: the binary each
// runs exists under cmd/, each listens where its port is published and its
// health check looks, and each reaches Postgres and RabbitMQ with the
// credentials those services are given.
func TestComposeBinaries(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)

	for name, port := range map[string]string{"api": "8080", "worker": "8081"} {
		s := f.Services[name]
		require.NotNil(t, s.Build, "%s is built from this repository", name)
		require.Equal(t, []string{name}, s.Command)
		info, err := os.Stat(filepath.Join(root, "cmd", name))
		require.NoError(t, err, "docker-compose.yml runs binary %q, built from cmd/%s", name, name)
		require.True(t, info.IsDir())

		require.Equal(t, ":"+port, s.Environment["EPOCH_HTTP_ADDR"], "%s listen address", name)
		require.Equal(t, []string{port + ":" + port}, s.Ports, "%s published port", name)
		require.Contains(t, s.Healthcheck.Test, "http://127.0.0.1:"+port+"/readyz", "%s health check", name)

		requirePostgresURL(t, f.Services["postgres"], s.Environment["EPOCH_DATABASE_URL"])
		requireAMQPURL(t, f.Services["rabbitmq"], s.Environment["EPOCH_AMQP_URL"])
	}

	api := f.Services["api"]
	require.NotEmpty(t, api.Environment["EPOCH_ADMIN_TOKEN"], "compose sets a development admin token")
	require.Equal(t, "service_healthy", api.DependsOn["postgres"].Condition)

	worker := f.Services["worker"]
	require.Equal(t, "service_healthy", worker.DependsOn["api"].Condition, "the api applies migrations before the worker starts")
	require.Equal(t, "service_healthy", worker.DependsOn["rabbitmq"].Condition)
}

func requirePostgresURL(t *testing.T, pg composeService, raw string) {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	require.Equal(t, "postgres", u.Scheme)
	require.Equal(t, "postgres:5432", u.Host)
	pass, _ := u.User.Password()
	require.Equal(t, pg.Environment["POSTGRES_USER"], u.User.Username())
	require.Equal(t, pg.Environment["POSTGRES_PASSWORD"], pass)
	require.Equal(t, "/"+pg.Environment["POSTGRES_DB"], u.Path)
}

func requireAMQPURL(t *testing.T, rabbit composeService, raw string) {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	require.Equal(t, "amqp", u.Scheme)
	require.Equal(t, "rabbitmq:5672", u.Host)
	pass, _ := u.User.Password()
	require.Equal(t, rabbit.Environment["RABBITMQ_DEFAULT_USER"], u.User.Username())
	require.Equal(t, rabbit.Environment["RABBITMQ_DEFAULT_PASS"], pass)
}

// TestDockerfile checks that the image builds every binary under cmd/ as a
// static executable and leaves the command to docker-compose.yml.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	df := string(data)

	require.Contains(t, df, "CGO_ENABLED=0")
	require.Contains(t, df, "./cmd/...")
	require.Contains(t, df, "\nUSER ", "the runtime image runs as a non-root user")
	require.NotContains(t, df, "\nENTRYPOINT", "compose picks the binary with command:")
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
