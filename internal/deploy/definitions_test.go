package deploy

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/rabbitadmin"
)

// definitionsPath holds the compose RabbitMQ's users and their rights,
// loaded at boot; it is the one place those rights are written down.
const definitionsPath = "deploy/rabbitmq/definitions.dev.json"

type definitions struct {
	Users       []rabbitadmin.User        `json:"users"`
	Vhosts      []struct{ Name string }   `json:"vhosts"`
	Permissions []rabbitadmin.Permissions `json:"permissions"`
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
