package deploy

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/catacloud/epoch/internal/broker"
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
	Hostname    string            `yaml:"hostname"`
	Profiles    []string          `yaml:"profiles"`
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

// The `cluster` profile: three RabbitMQ nodes, a topology one-shot of its
// own, and each worker twice, against the nodes.
const (
	clusterProfile         = "cluster"
	clusterTopologyService = "cluster-topology"
	clusterConfPath        = "deploy/rabbitmq/30-cluster.conf"
)

var clusterNodes = []string{"rabbitmq-1", "rabbitmq-2", "rabbitmq-3"}

// clusterWorkers are the profile's workers, by service: the single-node
// service whose role and RabbitMQ user each has, and the port it
// publishes (set N on 8N8x, beside the single node's 808x).
var clusterWorkers = map[string]struct{ counterpart, port string }{
	"cluster-relay-1": {"relay", "8181"}, "cluster-storage-1": {"storage", "8182"}, "cluster-billing-1": {"billing", "8183"},
	"cluster-relay-2": {"relay", "8281"}, "cluster-storage-2": {"storage", "8282"}, "cluster-billing-2": {"billing", "8283"},
}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)

	var plain, cluster []string
	for name, s := range f.Services {
		if len(s.Profiles) == 0 {
			plain = append(plain, name)
			continue
		}
		require.Equal(t, []string{clusterProfile}, s.Profiles, "service %s", name)
		cluster = append(cluster, name)
	}
	// Plain `docker compose up` starts these and only these.
	require.ElementsMatch(t, []string{"postgres", "rabbitmq", "api", topologyService, "relay", "storage", "billing"}, plain)
	require.ElementsMatch(t, append(append([]string{clusterTopologyService}, clusterNodes...), keys(clusterWorkers)...), cluster)
	for name, s := range f.Services {
		if name == topologyService || name == clusterTopologyService {
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

// TestComposePortsLoopback: nothing is published beyond the machine itself,
// and no two services publish the same port (the profile's beside the
// default ones, which `--profile cluster up` starts too).
func TestComposePortsLoopback(t *testing.T) {
	t.Parallel()
	published := map[string]string{}
	for name, s := range loadCompose(t).Services {
		for _, p := range s.Ports {
			require.True(t, strings.HasPrefix(p, "127.0.0.1:"), "service %s publishes %q beyond 127.0.0.1", name, p)
			host := strings.Split(p, ":")[1]
			require.Empty(t, published[host], "services %s and %s both publish port %s", name, published[host], host)
			published[host] = name
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

// TestComposeClusterProfile checks the `cluster` profile: three nodes that
// find each other and carry the single node's users, rights and policies,
// and each single-node worker twice, as the same user, listing the three
// nodes.
func TestComposeClusterProfile(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)
	defs := loadDefinitions(t)
	single := f.Services["rabbitmq"]

	conf, err := os.ReadFile(filepath.Join(root, clusterConfPath))
	require.NoError(t, err)
	var peers []string
	for _, line := range strings.Split(string(conf), "\n") {
		key, value, ok := strings.Cut(line, " = ")
		switch {
		case !ok || strings.HasPrefix(line, "#"):
		case key == "cluster_formation.peer_discovery_backend":
			require.Equal(t, "classic_config", value)
		case strings.HasPrefix(key, "cluster_formation.classic_config.nodes."):
			peers = append(peers, value)
		}
	}

	var nodeNames []string
	cookie := f.Services[clusterNodes[0]].Environment["RABBITMQ_ERLANG_COOKIE"]
	require.NotEmpty(t, cookie, "the nodes share an Erlang cookie")
	volumes := map[string]bool{}
	for i, name := range clusterNodes {
		s := f.Services[name]
		require.Equal(t, single.Image, s.Image, "%s runs the single node's RabbitMQ", name)
		require.Equal(t, name, s.Hostname, "%s's node name, rabbit@<hostname>, is the name its peers reach", name)
		nodeNames = append(nodeNames, "rabbit@"+s.Hostname)
		require.Equal(t, cookie, s.Environment["RABBITMQ_ERLANG_COOKIE"], "%s's Erlang cookie", name)
		require.NotContains(t, s.Environment, "RABBITMQ_DEFAULT_USER", "%s's users come from the definitions file alone", name)
		for _, v := range single.Volumes {
			if strings.HasPrefix(v, "./") {
				require.Contains(t, s.Volumes, v, "%s mounts the single node's %s", name, v)
			}
		}
		require.Contains(t, s.Volumes, "./"+clusterConfPath+":/etc/rabbitmq/conf.d/30-cluster.conf:ro")
		var data string
		for _, v := range s.Volumes {
			if strings.HasSuffix(v, ":/var/lib/rabbitmq") {
				data = v
			}
		}
		require.NotEmpty(t, data, "%s keeps its data in a volume", name)
		require.False(t, volumes[data], "%s shares data volume %s", name, data)
		volumes[data] = true
		require.Contains(t, f.Volumes, strings.TrimSuffix(data, ":/var/lib/rabbitmq"))
		require.ElementsMatch(t, []string{
			fmt.Sprintf("127.0.0.1:%d:5672", 5673+i), fmt.Sprintf("127.0.0.1:%d:15672", 15673+i),
		}, s.Ports)
		require.Equal(t, []string{"CMD", "rabbitmq-diagnostics", "-q", "check_running"}, s.Healthcheck.Test)
		if i > 0 {
			require.Equal(t, "service_healthy", s.DependsOn[clusterNodes[0]].Condition, "%s boots once %s runs, to join its cluster", name, clusterNodes[0])
		}
	}
	require.Equal(t, nodeNames, peers, "%s names the three nodes", clusterConfPath)

	topo := f.Services[clusterTopologyService]
	require.Equal(t, []string{"worker"}, topo.Command)
	require.Equal(t, "only", topo.Environment["EPOCH_DECLARE_TOPOLOGY"])
	require.NotContains(t, topo.Environment, "EPOCH_DATABASE_URL", "declaring needs no database")
	for _, node := range clusterNodes {
		require.Equal(t, "service_healthy", topo.DependsOn[node].Condition, "the topology waits for %s, so each queue gets a member on it", node)
	}
	require.Equal(t, amqpUser(t, f.Services[topologyService].Environment["EPOCH_AMQP_URL"]),
		requireClusterAMQPURL(t, defs, topo.Environment["EPOCH_AMQP_URL"]))

	for name, w := range clusterWorkers {
		s, counterpart := f.Services[name], f.Services[w.counterpart]
		require.NotNil(t, s.Build, "%s is built from this repository", name)
		require.Equal(t, []string{"worker"}, s.Command, name)
		require.Equal(t, counterpart.Environment["EPOCH_WORKER_ROLES"], s.Environment["EPOCH_WORKER_ROLES"], "%s runs %s's role", name, w.counterpart)
		require.Equal(t, "false", s.Environment["EPOCH_DECLARE_TOPOLOGY"], "%s's user may not declare", name)
		require.Equal(t, "service_healthy", s.DependsOn["api"].Condition, "the api applies migrations before %s starts", name)
		require.Equal(t, "service_completed_successfully", s.DependsOn[clusterTopologyService].Condition, "%s starts once the topology is declared", name)
		require.NotContains(t, s.DependsOn, topologyService, "%s needs nothing of the single node", name)
		require.Equal(t, ":"+w.port, s.Environment["EPOCH_HTTP_ADDR"], "%s listen address", name)
		require.Equal(t, []string{"127.0.0.1:" + w.port + ":" + w.port}, s.Ports, "%s published port", name)
		require.Contains(t, s.Healthcheck.Test, "http://127.0.0.1:"+w.port+"/readyz", "%s health check", name)
		requirePostgresURL(t, f.Services["postgres"], s.Environment["EPOCH_DATABASE_URL"])
		require.Equal(t, amqpUser(t, counterpart.Environment["EPOCH_AMQP_URL"]),
			requireClusterAMQPURL(t, defs, s.Environment["EPOCH_AMQP_URL"]), "%s is %s's RabbitMQ user", name, w.counterpart)
	}
}

// requireClusterAMQPURL checks that raw lists the three nodes of the
// cluster profile, in order, as the binaries parse it, each as one user of
// the definitions file with the password its hash was made from, and
// returns the user.
func requireClusterAMQPURL(t *testing.T, defs definitions, raw string) string {
	t.Helper()
	nodes, err := broker.ParseURLs(raw)
	require.NoError(t, err)
	require.Len(t, nodes, len(clusterNodes), "%s lists the three nodes", raw)
	var user string
	for i, node := range nodes {
		u, err := url.Parse(node)
		require.NoError(t, err)
		require.Equal(t, clusterNodes[i]+":5672", u.Host)
		u.Host = "rabbitmq:5672" // requireAMQPURL's host; the rest is the same
		name := requireAMQPURL(t, defs, u.String())
		require.True(t, user == "" || user == name, "%s lists the nodes as two users", raw)
		user = name
	}
	return user
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

// amqpUser is the user of an EPOCH_AMQP_URL, one URL or a list of the
// nodes of one cluster.
func amqpUser(t *testing.T, raw string) string {
	t.Helper()
	nodes, err := broker.ParseURLs(raw)
	require.NoError(t, err)
	var user string
	for _, node := range nodes {
		u, err := url.Parse(node)
		require.NoError(t, err)
		require.True(t, user == "" || user == u.User.Username(), "%s lists the nodes as two users", raw)
		user = u.User.Username()
	}
	return user
}
