package deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
)

// definitionsPath holds the compose RabbitMQ's users and their rights,
// loaded at boot; it is the one place those rights are written down.
const definitionsPath = "deploy/rabbitmq/definitions.dev.json"

type definitions struct {
	Users       []rabbitadmin.User        `json:"users"`
	Vhosts      []struct{ Name string }   `json:"vhosts"`
	Permissions []rabbitadmin.Permissions `json:"permissions"`
	Policies    []rabbitadmin.Policy      `json:"policies"`
}

func loadDefinitions(t *testing.T) definitions {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, definitionsPath))
	require.NoError(t, err)
	var d definitions
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&d))
	return d
}

func (d definitions) user(t *testing.T, name string) rabbitadmin.User {
	t.Helper()
	for _, u := range d.Users {
		if u.Name == name {
			return u
		}
	}
	t.Fatalf("%s has no user %q", definitionsPath, name)
	return rabbitadmin.User{}
}

func (d definitions) permissions(t *testing.T, user string) rabbitadmin.Permissions {
	t.Helper()
	var found []rabbitadmin.Permissions
	for _, p := range d.Permissions {
		if p.User == user {
			found = append(found, p)
		}
	}
	require.Len(t, found, 1, "%s gives user %s rights on exactly one vhost", definitionsPath, user)
	return found[0]
}

// passwordMatches checks password against u's hash the way RabbitMQ's
// rabbit_password_hashing_sha256 makes it: base64 of a 4-byte salt and
// SHA-256 of the salt and the password.
func passwordMatches(t *testing.T, u rabbitadmin.User, password string) bool {
	t.Helper()
	require.Equal(t, "rabbit_password_hashing_sha256", u.HashingAlgorithm, "user %s", u.Name)
	raw, err := base64.StdEncoding.DecodeString(u.PasswordHash)
	require.NoError(t, err, "user %s's password hash", u.Name)
	require.Len(t, raw, 4+sha256.Size, "user %s's password hash", u.Name)
	sum := sha256.Sum256(append(append([]byte{}, raw[:4]...), password...))
	return bytes.Equal(sum[:], raw[4:])
}

// TestRabbitDefinitions: the console has an administrator of its own; no
// other user may manage the broker, and only the topology's user may
// configure anything.
func TestRabbitDefinitions(t *testing.T) {
	t.Parallel()
	d := loadDefinitions(t)
	f := loadCompose(t)

	require.Len(t, d.Vhosts, 1)
	require.Equal(t, "/", d.Vhosts[0].Name)
	services := map[string]bool{}
	for _, s := range f.Services {
		if raw := s.Environment["EPOCH_AMQP_URL"]; raw != "" {
			services[amqpUser(t, raw)] = true
		}
	}
	// The api reads queue depths as a monitoring user that may touch
	// nothing.
	monitor, err := url.Parse(f.Services["api"].Environment["EPOCH_RABBITMQ_MANAGEMENT_URL"])
	require.NoError(t, err)
	var admins []string
	for _, u := range d.Users {
		p := d.permissions(t, u.Name)
		require.Equal(t, "/", p.Vhost)
		if u.Name == monitor.User.Username() {
			require.Equal(t, []string{"monitoring"}, u.Tags)
			require.Equal(t, [3]string{"^$", "^$", "^$"}, [3]string{p.Configure, p.Write, p.Read})
			password, _ := monitor.User.Password()
			require.True(t, passwordMatches(t, u, password), "the api's management password matches %s's hash", u.Name)
			continue
		}
		if len(u.Tags) > 0 {
			require.Equal(t, []string{"administrator"}, u.Tags, "user %s", u.Name)
			require.False(t, services[u.Name], "service user %s must not be an administrator", u.Name)
			admins = append(admins, u.Name)
			continue
		}
		require.True(t, services[u.Name], "user %s is no compose service's", u.Name)
	}
	require.Len(t, admins, 1, "one console administrator")
	topology := amqpUser(t, f.Services[topologyService].Environment["EPOCH_AMQP_URL"])
	for _, w := range workers {
		user := amqpUser(t, f.Services[w].Environment["EPOCH_AMQP_URL"])
		require.Equal(t, "^$", d.permissions(t, user).Configure, "only %s configures; %s may not", topology, user)
	}
}

// remoteSubscribers are the subscribers whose queues the topology declares
// (cmd/worker's remoteSubscribers).
var remoteSubscribers = subscribers.Movable().Names()

// TestDeadLetterPolicy: the definitions file's one policy is the broker
// package's dead-letter policy, for the subscriber queues and no other
// queue of the topology, and README's rabbitmqctl line for deployments
// without the file sets that same policy.
func TestDeadLetterPolicy(t *testing.T) {
	t.Parallel()
	d := loadDefinitions(t)
	require.Len(t, d.Policies, 1)
	p := d.Policies[0]
	require.Equal(t, "/", p.Vhost)
	require.Equal(t, broker.DeadLetterPolicyName, p.Name)
	require.Equal(t, broker.DeadLetterPolicyPattern(remoteSubscribers), p.Pattern)
	// "queues", not "quorum_queues": RabbitMQ 3.10 knows only queues,
	// exchanges and all.
	require.Equal(t, "queues", p.ApplyTo)
	require.Equal(t, broker.DeadLetterPolicyDefinition(), p.Definition)

	pattern := regexp.MustCompile(p.Pattern)
	for _, name := range remoteSubscribers {
		require.True(t, pattern.MatchString(broker.QueueName(name)), "the policy takes %s", broker.QueueName(name))
		require.False(t, pattern.MatchString(broker.DeadQueueName(name)), "the policy leaves %s", broker.DeadQueueName(name))
	}
	require.False(t, pattern.MatchString(broker.Unsubscribed), "the policy leaves %s", broker.Unsubscribed)

	definition, err := json.Marshal(p.Definition)
	require.NoError(t, err)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	line := fmt.Sprintf("rabbitmqctl set_policy --apply-to %s %s '%s' '%s'", p.ApplyTo, p.Name, p.Pattern, definition)
	require.True(t, strings.Contains(string(readme), line), "README sets the definitions file's policy with\n%s", line)
}

// TestDeadLetterPolicyOnTheBroker gives the definitions file's policy to a
// vhost of the real broker (which validates it) with the topology declared
// as the workers declare it: the subscriber queues take it, the others do
// not.
func TestDeadLetterPolicyOnTheBroker(t *testing.T) {
	t.Parallel()
	p := loadDefinitions(t).Policies[0]
	amqpURL := testbroker.New(t)
	base, err := amqp.ParseURI(amqpURL)
	require.NoError(t, err)
	admin := rabbitadmin.New(base)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p.Vhost = base.Vhost
	require.NoError(t, admin.PutPolicy(ctx, p))

	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	subs := subscribers.Movable().Subscriptions()
	require.NoError(t, broker.DeclareTopology(channel(t, conn), subs, broker.DefaultDeliveryLimit))
	require.NoError(t, broker.DeclareUnsubscribed(channel(t, conn), subs, domain.JobEventTypes))

	want := map[string]string{broker.Unsubscribed: ""}
	for _, name := range remoteSubscribers {
		want[broker.QueueName(name)] = p.Name
		want[broker.DeadQueueName(name)] = ""
	}
	// A queue's policy shows with its statistics, sampled every few
	// seconds; until the first sample every queue shows none.
	require.Eventually(t, func() bool {
		for queue := range want {
			q, err := admin.Queue(ctx, base.Vhost, queue)
			if err != nil || q.EffectivePolicyDefinition == nil {
				return false
			}
		}
		return true
	}, 20*time.Second, 250*time.Millisecond, "every queue's statistics are sampled")
	for queue, policy := range want {
		q, err := admin.Queue(ctx, base.Vhost, queue)
		require.NoError(t, err)
		require.Equal(t, policy, q.Policy, "policy of %s", queue)
	}
}
