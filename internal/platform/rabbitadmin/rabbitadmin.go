// Package rabbitadmin drives RabbitMQ's management HTTP API for the tests
// and the benchmark tool (vhosts of their own, and reads of what the broker
// holds), and reads queue depths for the api's GET /v1/admin/status.
package rabbitadmin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Client calls the management API of the broker an AMQP URI points at, as
// that URI's user.
type Client struct {
	base, user, password string
	http                 *http.Client
}

// New is a client for the broker of u: the API at
// EPOCH_RABBITMQ_MANAGEMENT_URL, or on port 15672 of u's host.
func New(u amqp.URI) *Client {
	base := os.Getenv("EPOCH_RABBITMQ_MANAGEMENT_URL")
	if base == "" {
		base = "http://" + net.JoinHostPort(u.Host, "15672")
	}
	return &Client{base: base, user: u.Username, password: u.Password, http: &http.Client{Timeout: 30 * time.Second}}
}

// NewAt is a client of the management API at managementURL, which may
// carry the user and password (http://user:password@host:15672); without
// them it calls as the user of amqpURI. timeout bounds each call.
func NewAt(managementURL string, amqpURI amqp.URI, timeout time.Duration) (*Client, error) {
	u, err := url.Parse(managementURL)
	if err != nil {
		return nil, fmt.Errorf("management URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("management URL %q: want http(s)://[user:password@]host:port", u.Redacted())
	}
	c := &Client{user: amqpURI.Username, password: amqpURI.Password, http: &http.Client{Timeout: timeout}}
	if u.User != nil {
		c.user = u.User.Username()
		c.password, _ = u.User.Password()
		u.User = nil
	}
	c.base = strings.TrimSuffix(u.String(), "/")
	return c, nil
}

// QueueMessages is how many messages queue of vhost holds (ready and
// unacknowledged), as the management API last sampled it: the figure may be
// a few seconds old.
func (c *Client) QueueMessages(ctx context.Context, vhost, queue string) (int64, error) {
	var q struct {
		Messages *int64 `json:"messages"`
	}
	if err := c.Do(ctx, http.MethodGet, "/api/queues/"+url.PathEscape(vhost)+"/"+url.PathEscape(queue), nil, &q); err != nil {
		return 0, err
	}
	if q.Messages == nil {
		// A queue declared moments ago has no sample yet.
		return 0, fmt.Errorf("queue %s of vhost %s: no message count yet", queue, vhost)
	}
	return *q.Messages, nil
}

var enableOnce sync.Once

// Ready waits (at most 60 s) until the API answers. When nothing listens,
// it enables the management plugin, once per process, on the local broker.
// It also rides out a broker restart by another process.
func (c *Client) Ready(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	var enableErr error // kept for the final error: the API may come up anyway
	for {
		err := c.Do(ctx, http.MethodGet, "/api/overview", nil, nil)
		if err == nil {
			return nil
		}
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			enableOnce.Do(func() {
				if out, err := exec.CommandContext(ctx, "rabbitmq-plugins", "enable", "rabbitmq_management").CombinedOutput(); err != nil {
					enableErr = fmt.Errorf("rabbitmq-plugins enable rabbitmq_management: %w\n%s", err, out)
				}
			})
		}
		if time.Now().After(deadline) {
			return errors.Join(fmt.Errorf("RabbitMQ management API is not reachable at %s: %w", c.base, err), enableErr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Do sends one request; a status of 300 or more is an error. out, when not
// nil, receives the JSON answer.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.user, c.password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
	}
	if out != nil {
		return json.Unmarshal(msg, out)
	}
	return nil
}

// CreateVhost creates vhost name, gives base's user every permission on it,
// and returns its AMQP URL once it accepts a connection (at most 30 s).
func (c *Client) CreateVhost(ctx context.Context, base amqp.URI, name string) (string, error) {
	if err := c.Do(ctx, http.MethodPut, "/api/vhosts/"+url.PathEscape(name), nil, nil); err != nil {
		return "", err
	}
	perm := []byte(`{"configure":".*","write":".*","read":".*"}`)
	if err := c.Do(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(name)+"/"+url.PathEscape(base.Username), perm, nil); err != nil {
		return "", err
	}
	base.Vhost = name
	amqpURL := base.String()
	return amqpURL, WaitAMQP(ctx, amqpURL, 30*time.Second)
}

// DeleteVhost deletes vhost name, with its queues and connections.
func (c *Client) DeleteVhost(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/api/vhosts/"+url.PathEscape(name), nil, nil)
}

// WaitAMQP waits (at most d) until amqpURL accepts an AMQP connection.
func WaitAMQP(ctx context.Context, amqpURL string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("RabbitMQ is not reachable at %s: %w", amqpURL, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// User is a RabbitMQ user as a definitions file holds it: a password hash
// (never the password) and tags such as "administrator".
type User struct {
	Name             string   `json:"name"`
	PasswordHash     string   `json:"password_hash"`
	HashingAlgorithm string   `json:"hashing_algorithm"`
	Tags             []string `json:"tags"`
}

// Permissions are one user's rights on one vhost: regular expressions of
// the resource names it may configure, write to and read from.
type Permissions struct {
	User      string `json:"user"`
	Vhost     string `json:"vhost"`
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

// PutUser creates (or replaces) u.
func (c *Client) PutUser(ctx context.Context, u User) error {
	tags := u.Tags
	if tags == nil {
		tags = []string{}
	}
	body, err := json.Marshal(map[string]any{
		"password_hash": u.PasswordHash, "hashing_algorithm": u.HashingAlgorithm, "tags": tags,
	})
	if err != nil {
		return err
	}
	return c.Do(ctx, http.MethodPut, "/api/users/"+url.PathEscape(u.Name), body, nil)
}

// DeleteUser deletes user name, with its permissions.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/api/users/"+url.PathEscape(name), nil, nil)
}

// PutPermissions sets p.User's rights on p.Vhost.
func (c *Client) PutPermissions(ctx context.Context, p Permissions) error {
	body, err := json.Marshal(map[string]string{"configure": p.Configure, "write": p.Write, "read": p.Read})
	if err != nil {
		return err
	}
	return c.Do(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(p.Vhost)+"/"+url.PathEscape(p.User), body, nil)
}

// Policy is a policy as a definitions file holds it: the queues (or
// exchanges) of Vhost whose names match Pattern take Definition.
type Policy struct {
	Vhost      string         `json:"vhost"`
	Name       string         `json:"name"`
	Pattern    string         `json:"pattern"`
	ApplyTo    string         `json:"apply-to"`
	Priority   int            `json:"priority"`
	Definition map[string]any `json:"definition"`
}

// PutPolicy creates (or replaces) p.
func (c *Client) PutPolicy(ctx context.Context, p Policy) error {
	body, err := json.Marshal(map[string]any{
		"pattern": p.Pattern, "apply-to": p.ApplyTo, "priority": p.Priority, "definition": p.Definition,
	})
	if err != nil {
		return err
	}
	return c.Do(ctx, http.MethodPut, "/api/policies/"+url.PathEscape(p.Vhost)+"/"+url.PathEscape(p.Name), body, nil)
}

// Queue is what the management API tells of a queue. Arguments and
// Members come from the queue's definition and are there at once; Policy
// and EffectivePolicyDefinition come with the queue's statistics, empty
// until their first sample (a few seconds).
type Queue struct {
	Name                      string         `json:"name"`
	Type                      string         `json:"type"`
	Arguments                 map[string]any `json:"arguments"`
	Members                   []string       `json:"members"`
	Policy                    string         `json:"policy"`
	EffectivePolicyDefinition map[string]any `json:"effective_policy_definition"`
}

// Queue reads queue name of vhost.
func (c *Client) Queue(ctx context.Context, vhost, name string) (Queue, error) {
	var q Queue
	err := c.Do(ctx, http.MethodGet, "/api/queues/"+url.PathEscape(vhost)+"/"+url.PathEscape(name), nil, &q)
	return q, err
}
