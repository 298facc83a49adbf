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

// Services of docker-compose.yml: the one-shot that declares the RabbitMQ
// topology, and the long-running ones with the port each publishes.
const topologyService = "topology"

var ports = map[string]string{"api": "8080", "relay": "8081", "storage": "8082", "billing": "8083"}

// workers are the worker services, by the one role each runs.
var workers = []string{"relay", "storage", "billing"}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)

	require.ElementsMatch(t, []string{"postgres", "rabbitmq", "api", topologyService, "relay", "storage", "billing"}, keys(f.Services))
	for name, s := range f.Services {
		if name == topologyService {
			require.Equal(t, "no", s.Restart, "the one-shot %s runs once per `up`", name)
			continue
		}
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
	require.ElementsMatch(t, []string{"127.0.0.1:5672:5672", "127.0.0.1:15672:15672"}, rabbit.Ports)
	require.Equal(t, []string{"CMD", "rabbitmq-diagnostics", "-q", "ping"}, rabbit.Healthcheck.Test)
	// The users come from the definitions file alone: a default user would
	// be one more with every right.
	require.NotContains(t, rabbit.Environment, "RABBITMQ_DEFAULT_USER")
	require.Contains(t, rabbit.Volumes, "./"+definitionsPath+":/etc/rabbitmq/definitions.json:ro")
	require.Contains(t, rabbit.Volumes, "./deploy/rabbitmq/20-epoch.conf:/etc/rabbitmq/conf.d/20-epoch.conf:ro")
	conf, err := os.ReadFile(filepath.Join(root, "deploy/rabbitmq/20-epoch.conf"))
	require.NoError(t, err)
	require.Contains(t, string(conf), "\nload_definitions = /etc/rabbitmq/definitions.json\n")
}

// TestComposePortsLoopback: nothing is published beyond the machine itself.
func TestComposePortsLoopback(t *testing.T) {
	t.Parallel()
	for name, s := range loadCompose(t).Services {
		for _, p := range s.Ports {
			require.True(t, strings.HasPrefix(p, "127.0.0.1:"), "service %s publishes %q beyond 127.0.0.1", name, p)
		}
	}
}

// TestComposeBinaries checks the api and worker services: the binary each
// runs exists under cmd/, each listens where its port is published and its
// health check looks, and each reaches Postgres and RabbitMQ with the
// credentials those services are given.
func TestComposeBinaries(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)
	defs := loadDefinitions(t)

	for name, port := range ports {
		s := f.Services[name]
		binary := "worker"
		if name == "api" {
			binary = "api"
		}
		require.NotNil(t, s.Build, "%s is built from this repository", name)
		require.Equal(t, []string{binary}, s.Command, name)
		info, err := os.Stat(filepath.Join(root, "cmd", binary))
		require.NoError(t, err, "docker-compose.yml runs binary %q, built from cmd/%s", binary, binary)
		require.True(t, info.IsDir())

		require.Equal(t, ":"+port, s.Environment["EPOCH_HTTP_ADDR"], "%s listen address", name)
		require.Equal(t, []string{"127.0.0.1:" + port + ":" + port}, s.Ports, "%s published port", name)
		require.Contains(t, s.Healthcheck.Test, "http://127.0.0.1:"+port+"/readyz", "%s health check", name)
		requirePostgresURL(t, f.Services["postgres"], s.Environment["EPOCH_DATABASE_URL"])
	}

	api := f.Services["api"]
	require.NotEmpty(t, api.Environment["EPOCH_ADMIN_TOKEN"], "compose sets a development admin token")
	require.Equal(t, "service_healthy", api.DependsOn["postgres"].Condition)
	require.NotContains(t, api.Environment, "EPOCH_AMQP_URL", "the api does not use RabbitMQ, so it holds no broker password")

	users := map[string]string{}
	for _, name := range workers {
		s := f.Services[name]
		require.Equal(t, name, s.Environment["EPOCH_WORKER_ROLES"], "%s runs its one role", name)
		require.Equal(t, "false", s.Environment["EPOCH_DECLARE_TOPOLOGY"], "%s's user may not declare", name)
		require.Equal(t, "service_healthy", s.DependsOn["api"].Condition, "the api applies migrations before %s starts", name)
		require.Equal(t, "service_completed_successfully", s.DependsOn[topologyService].Condition, "%s starts once the topology is declared", name)
		users[name] = requireAMQPURL(t, defs, s.Environment["EPOCH_AMQP_URL"])
	}
	topo := f.Services[topologyService]
	require.Equal(t, []string{"worker"}, topo.Command)
	require.Equal(t, "only", topo.Environment["EPOCH_DECLARE_TOPOLOGY"])
	require.Equal(t, "service_healthy", topo.DependsOn["rabbitmq"].Condition)
	require.NotContains(t, topo.Environment, "EPOCH_DATABASE_URL", "declaring needs no database")
	users[topologyService] = requireAMQPURL(t, defs, topo.Environment["EPOCH_AMQP_URL"])

	seen := map[string]string{}
	for service, user := range users {
		require.Empty(t, seen[user], "services %s and %s share RabbitMQ user %s", service, seen[user], user)
		seen[user] = service
	}
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

// requireAMQPURL checks that raw reaches the compose RabbitMQ as a user of
// the definitions file, with the password that user's hash was made from,
// and returns the user.
func requireAMQPURL(t *testing.T, defs definitions, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	require.Equal(t, "amqp", u.Scheme)
	require.Equal(t, "rabbitmq:5672", u.Host)
	require.Equal(t, "/", u.Path, "the definitions give rights on the default vhost")
	pass, _ := u.User.Password()
	user := defs.user(t, u.User.Username())
	require.True(t, passwordMatches(t, user, pass), "%s's password in %s does not match its hash in %s", user.Name, raw, definitionsPath)
	require.Empty(t, user.Tags, "service user %s needs no management tags", user.Name)
	return user.Name
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

func amqpUser(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u.User.Username()
}
