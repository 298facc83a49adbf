package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/syncbuf"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// A relay whose Postgres goes away (its connections broken, new ones
// refused) logs a warning with the cause once, not an error per failed
// cycle, and once Postgres is back a line saying how long it was away;
// then it relays again.
func TestRelayLogsADatabaseOutageOnceAsAWarning(t *testing.T) {
	t.Parallel()
	amqpURL := testbroker.New(t)
	declare(t, amqpURL, "#")
	ctx := context.Background()
	_, dbURL := testdb.New(t)
	// The relay (and the test's writes) reach the test's database through
	// a proxy the test can take away: to the relay, Postgres is gone, as
	// when a primary dies.
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	px := newProxy(t, u.Host)
	u.Host = px.addr
	pool, err := database.Connect(ctx, u.String(), 4, nil)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	logs := &syncbuf.Buffer{}
	pub, err := broker.NewPublisher(broker.PublisherConfig{URL: amqpURL}, testLogger(t))
	require.NoError(t, err)
	r, err := outbox.NewRelay(pool, []*broker.Publisher{pub}, outbox.Config{
		PollInterval: 20 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	}, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	relayed := func() {
		t.Helper()
		write(t, ctx, pool, []eventstore.Event{newEvent(t, uuid.New(), 1, "file.uploaded")})
		require.Eventually(t, func() bool {
			var n int
			return pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n) == nil && n == 0
		}, 30*time.Second, 10*time.Millisecond, "the relay did not take the outbox row")
	}
	relayed()

	px.down()
	// Cycles fail against the missing server, again and again.
	require.Eventually(t, func() bool {
		return strings.Count(logs.String(), "outbox relay: database still unavailable") >= 5
	}, 30*time.Second, 10*time.Millisecond, "no failed cycles logged while Postgres was away:\n%s", logs.String())
	px.up()
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "outbox relay: database back")
	}, 30*time.Second, 10*time.Millisecond, "the relay never said Postgres was back:\n%s", logs.String())
	relayed()

	var warnings, back int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		require.NotEqual(t, "ERROR", rec["level"], "an outage is no error of the relay's: %s", line)
		switch rec["msg"] {
		case "outbox relay: database unavailable, retrying until it is back":
			warnings++
			require.Equal(t, "WARN", rec["level"], line)
			require.NotEmpty(t, rec["error"], "the warning names its cause: %s", line)
		case "outbox relay: database back":
			back++
			require.NotEmpty(t, rec["unavailable_for"], line)
		}
	}
	// One lane (one publisher): one warning and one line when it is back.
	require.Equal(t, 1, warnings, "warnings for one outage:\n%s", logs.String())
	require.Equal(t, 1, back, "'back' lines for one outage:\n%s", logs.String())
}

// proxy forwards TCP connections to a server until down, which closes its
// listener and every connection; up listens on the same address again.
type proxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{t: t, target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.down(); p.wg.Wait() })
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = true, true
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{c, s}, {s, c}} {
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				}()
			}
		}
	}()
}

// down takes the server away: no listener, every connection closed.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// up listens on the proxy's address again.
func (p *proxy) up() {
	p.t.Helper()
	var ln net.Listener
	var err error
	// The address was ours a moment ago; another listener may take it
	// only in the instant between.
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(p.t, err)
	p.serve(ln)
}
