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

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/subscribers"
)

// root is the repository root, relative to this package's directory (where
// go test runs).
const root = "../../.."

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
var workers = subscribers.Roles()

// The `cluster` profile: three RabbitMQ nodes, a topology one-shot of its
// own, and each worker twice, against the nodes.
const (
	clusterProfile         = "cluster"
	clusterTopologyService = "cluster-topology"
	clusterConfPath        = "deploy/rabbitmq/30-cluster.conf"
)

var clusterNodes = []string{"rabbitmq-1", "rabbitmq-2", "rabbitmq-3"}

// The `pgpair` profile: a Postgres primary and its standby, and the api
// and a worker per role against both.
const (
	pgpairProfile = "pgpair"
	pgPrimary     = "pg-primary"
	pgStandby     = "pg-standby"
)

// pgpairServices are the profile's api and workers, by service: the
// single-Postgres service each repeats, and the port it publishes.
var pgpairServices = map[string]struct{ counterpart, port string }{
	"pgpair-api": {"api", "8090"}, "pgpair-relay": {"relay", "8091"}, "pgpair-storage": {"storage", "8092"}, "pgpair-billing": {"billing", "8093"},
}

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

	var plain, cluster, pgpair, observability []string
	for name, s := range f.Services {
		switch {
		case len(s.Profiles) == 0:
			plain = append(plain, name)
		case len(s.Profiles) == 1 && s.Profiles[0] == pgpairProfile:
			pgpair = append(pgpair, name)
		case len(s.Profiles) == 1 && s.Profiles[0] == observabilityProfile:
			observability = append(observability, name)
		default:
			require.Equal(t, []string{clusterProfile}, s.Profiles, "service %s", name)
			cluster = append(cluster, name)
		}
	}
	// Plain `docker compose up` starts these and only these.
	require.ElementsMatch(t, []string{"postgres", "rabbitmq", "api", topologyService, "relay", "storage", "billing"}, plain)
	require.ElementsMatch(t, append(append([]string{clusterTopologyService}, clusterNodes...), keys(clusterWorkers)...), cluster)
	require.ElementsMatch(t, append([]string{pgPrimary, pgStandby}, keys(pgpairServices)...), pgpair)
	require.ElementsMatch(t, []string{prometheusService, grafanaService, jaegerService}, observability)
	for name, s := range f.Services {
		if name == topologyService || name == clusterTopologyService {
			require.Equal(t, "no", s.Restart, "the one-shot %s runs once per `up`", name)
			continue
		}
		require.NotNil(t, s.Healthcheck, "service %s has no health check", name)
		require.NotEmpty(t, s.Healthcheck.Test, "service %s has an empty health check", name)
		if name == pgPrimary {
			// Back by itself after a failover, it would be a second
			// primary beside the promoted standby.
			require.Equal(t, "no", s.Restart, "%s does not restart by itself", name)
			continue
		}
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

// TestComposePgPairProfile checks the `pgpair` profile: a primary that
// replicates to a standby made from it, named as the synchronous standby,
// and the api and each worker as their single-Postgres counterparts but
// with EPOCH_DATABASE_URL naming both servers, read-write sessions only.
func TestComposePgPairProfile(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)
	single := f.Services["postgres"]
	primary, standby := f.Services[pgPrimary], f.Services[pgStandby]

	for _, s := range []composeService{primary, standby} {
		require.Equal(t, single.Image, s.Image, "the pair runs the single Postgres's image")
		require.Contains(t, s.Healthcheck.Test, "pg_isready")
	}
	for _, k := range []string{"POSTGRES_USER", "POSTGRES_PASSWORD"} {
		require.Equal(t, single.Environment[k], primary.Environment[k], "primary's %s", k)
		require.Equal(t, single.Environment[k], standby.Environment[k], "standby's %s", k)
	}
	require.Equal(t, single.Environment["POSTGRES_DB"], primary.Environment["POSTGRES_DB"])
	args := strings.Join(primary.Command, " ")
	require.Contains(t, args, "wal_level=replica")
	require.Contains(t, args, "synchronous_standby_names=${EPOCH_PG_SYNC_STANDBY-epoch_standby}", "synchronous by default, asynchronous with the variable set empty")
	require.Contains(t, primary.Volumes, "./deploy/postgres/10-replication.sh:/docker-entrypoint-initdb.d/10-replication.sh:ro")
	hba, err := os.ReadFile(filepath.Join(root, "deploy/postgres/10-replication.sh"))
	require.NoError(t, err)
	require.Contains(t, string(hba), "host replication $POSTGRES_USER all scram-sha-256", "the standby may stream from the primary")

	require.Equal(t, "service_healthy", standby.DependsOn[pgPrimary].Condition, "the standby's base backup needs the primary")
	require.Equal(t, pgPrimary, standby.Environment["PRIMARY_HOST"])
	require.Contains(t, standby.Volumes, "./deploy/postgres/standby.sh:/usr/local/bin/epoch-standby.sh:ro")
	script, err := os.ReadFile(filepath.Join(root, "deploy/postgres/standby.sh"))
	require.NoError(t, err)
	for _, want := range []string{"pg_basebackup", "standby.signal", "application_name=epoch_standby", "synchronous_standby_names=''"} {
		require.Contains(t, string(script), want, "deploy/postgres/standby.sh")
	}
	require.NotEqual(t, primary.Volumes[0], standby.Volumes[0], "each server keeps its own data")

	for name, svc := range pgpairServices {
		s, counterpart := f.Services[name], f.Services[svc.counterpart]
		require.Equal(t, counterpart.Command, s.Command, name)
		require.NotNil(t, s.Build, "%s is built from this repository", name)
		for k, v := range counterpart.Environment {
			switch k {
			case "EPOCH_DATABASE_URL", "EPOCH_HTTP_ADDR":
			default:
				require.Equal(t, v, s.Environment[k], "%s's %s, as %s's", name, k, svc.counterpart)
			}
		}
		require.Equal(t, ":"+svc.port, s.Environment["EPOCH_HTTP_ADDR"], "%s listen address", name)
		require.Equal(t, []string{"127.0.0.1:" + svc.port + ":" + svc.port}, s.Ports, "%s published port", name)
		require.Contains(t, s.Healthcheck.Test, "http://127.0.0.1:"+svc.port+"/readyz", "%s health check", name)

		u, err := url.Parse(s.Environment["EPOCH_DATABASE_URL"])
		require.NoError(t, err, name)
		require.Equal(t, "postgres", u.Scheme)
		require.Equal(t, pgPrimary+":5432,"+pgStandby+":5432", u.Host, "%s names both servers, the primary first", name)
		pass, _ := u.User.Password()
		require.Equal(t, primary.Environment["POSTGRES_USER"], u.User.Username())
		require.Equal(t, primary.Environment["POSTGRES_PASSWORD"], pass)
		require.Equal(t, "/"+primary.Environment["POSTGRES_DB"], u.Path)
		require.Equal(t, "read-write", u.Query().Get("target_session_attrs"), "%s connects only to the server that takes writes", name)
	}
	api := f.Services["pgpair-api"]
	require.Equal(t, "service_healthy", api.DependsOn[pgPrimary].Condition)
	require.Equal(t, "service_healthy", api.DependsOn[pgStandby].Condition)
	for name := range pgpairServices {
		if name != "pgpair-api" {
			require.Equal(t, "service_healthy", f.Services[name].DependsOn["pgpair-api"].Condition, "the api applies migrations before %s starts", name)
			require.Equal(t, "service_completed_successfully", f.Services[name].DependsOn[topologyService].Condition)
		}
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
