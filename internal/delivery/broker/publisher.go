package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/platform/backoff"
)

// Errors a message of a batch can fail with. A failed message may or may not
// have reached a queue; the caller keeps it and publishes it again.
var (
	ErrNotConnected   = errors.New("broker: not connected")
	ErrNacked         = errors.New("broker: message nacked")
	ErrReturned       = errors.New("broker: message returned as unroutable")
	ErrConfirmTimeout = errors.New("broker: no confirm in time")
)

// Message is one publishing and its routing key.
type Message struct {
	RoutingKey string
	// Publishing must carry a MessageId unique within a batch: a returned
	// message is matched to its publishing by it.
	Publishing amqp.Publishing
}

// PublisherConfig configures a Publisher. Zero values take the defaults.
type PublisherConfig struct {
	URL string
	// ConnectionName is shown in the management console.
	ConnectionName string
	// MaxInFlight caps how many messages await their confirm at once
	// (default 1000); larger batches go out in chunks of that size.
	MaxInFlight int
	// MinBackoff and MaxBackoff bound the wait between redials (defaults
	// backoff.DefaultMin and backoff.DefaultMax).
	MinBackoff, MaxBackoff time.Duration
}

func (c *PublisherConfig) setDefaults() error {
	if c.URL == "" {
		return errors.New("broker: publisher needs a URL")
	}
	if c.ConnectionName == "" {
		c.ConnectionName = "epoch-publisher"
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1000
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = backoff.DefaultMin
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = backoff.DefaultMax
	}
	if c.MaxInFlight < 0 || c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("broker: invalid publisher config %+v", *c)
	}
	return nil
}

// Publisher publishes batches with pipelined publisher confirms on one
// confirm channel, and redials (with backoff) when the broker closes the
// connection: amqp091-go does not reconnect by itself. Run keeps the
// connection; Publish uses whatever session is current.
//
// A chunk that is not wholly confirmed (nacks, or confirms that do not come
// in time) ends its session, even while the channel stays open: a channel
// that began publishing to a quorum queue during its leader's election can
// be nacked for ever, until it is reopened. Run then dials a fresh
// connection and confirm channel.
type Publisher struct {
	cfg    PublisherConfig
	logger *slog.Logger

	publishMu sync.Mutex // one batch at a time owns the channel

	mu    sync.Mutex
	sess  *session
	ready chan struct{} // closed while sess is set

	sessions atomic.Uint64 // sessions Run has opened
}

// session is one connection and its confirm channel.
type session struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
	broken  chan struct{} // closed by Publish to force a fresh session
	once    sync.Once
}

func (s *session) breakOff() { s.once.Do(func() { close(s.broken) }) }

func (s *session) isBroken() bool {
	select {
	case <-s.broken:
		return true
	default:
		return false
	}
}

// NewPublisher checks cfg; Run connects.
func NewPublisher(cfg PublisherConfig, logger *slog.Logger) (*Publisher, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Publisher{cfg: cfg, logger: logger, ready: make(chan struct{})}, nil
}

// Run dials, keeps the session until the broker closes it, and dials again,
// until ctx ends. It returns nil after ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	redial := backoff.New(p.cfg.MinBackoff, p.cfg.MaxBackoff)
	for {
		sess, err := p.dial()
		if err != nil {
			wait := redial.Next()
			p.logger.WarnContext(ctx, "broker: connect failed", "error", err, "retry_in", wait.String())
			if !backoff.Sleep(ctx, wait) {
				return nil
			}
			continue
		}
		redial.Reset()
		connClosed := sess.conn.NotifyClose(make(chan *amqp.Error, 1))
		chClosed := sess.ch.NotifyClose(make(chan *amqp.Error, 1))
		p.sessions.Add(1)
		p.setSession(sess)
		p.logger.InfoContext(ctx, "broker: connected")

		select {
		case <-ctx.Done():
		case err := <-connClosed:
			p.logger.WarnContext(ctx, "broker: connection closed", "error", err)
		case err := <-chClosed:
			p.logger.WarnContext(ctx, "broker: channel closed", "error", err)
		case <-sess.broken:
			p.logger.WarnContext(ctx, "broker: dropping session after unconfirmed publishes")
		}
		p.setSession(nil)
		// Closing the connection nacks the confirms an in-flight batch still
		// waits for: they count as failed, and their rows stay.
		_ = sess.conn.Close()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// Dial opens a connection to a node of urls: one URL, or the
// comma-separated URLs of the nodes of one cluster. Each call starts at
// the next node in turn, so a process's connections spread over the
// cluster, and tries the others when one does not answer; a connection
// that breaks is dialled again the same way, so it moves to a node that
// answers.
func Dial(urls, connectionName string) (*amqp.Connection, error) {
	nodes, err := ParseURLs(urls)
	if err != nil {
		return nil, err
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(connectionName)
	start := int(nextNode.Add(1))
	var errs []error
	for i := range nodes {
		node := nodes[(start+i)%len(nodes)]
		conn, err := amqp.DialConfig(node, amqp.Config{
			Heartbeat:  10 * time.Second,
			Locale:     "en_US",
			Properties: props,
			Dial:       amqp.DefaultDial(5 * time.Second),
		})
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("dial: %w", errors.Join(errs...))
}

// nextNode is where the next Dial starts in its list of nodes. It starts
// at a random node: processes started together would otherwise all put
// their first connections on the first node.
var nextNode = func() *atomic.Uint32 {
	var n atomic.Uint32
	n.Store(rand.Uint32())
	return &n
}()

// ParseURLs splits a comma-separated list of AMQP URLs (the nodes of one
// cluster; one URL is a cluster of one) and checks each.
func ParseURLs(urls string) ([]string, error) {
	var nodes []string
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if _, err := amqp.ParseURI(u); err != nil {
			return nil, fmt.Errorf("broker URL %q: %w", u, err)
		}
		nodes = append(nodes, u)
	}
	if len(nodes) == 0 {
		return nil, errors.New("no broker URL")
	}
	return nodes, nil
}

func (p *Publisher) dial() (*session, error) {
	conn, err := Dial(p.cfg.URL, p.cfg.ConnectionName)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	// Room for one return per message in flight: the connection's reader
	// never blocks on it, and a return is in the buffer before the ack of
	// its message is processed (the broker sends basic.return first).
	returns := ch.NotifyReturn(make(chan amqp.Return, p.cfg.MaxInFlight))
	return &session{conn: conn, ch: ch, returns: returns, broken: make(chan struct{})}, nil
}

func (p *Publisher) setSession(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s != nil && p.sess == nil {
		close(p.ready)
	}
	if s == nil && p.sess != nil {
		p.ready = make(chan struct{})
	}
	p.sess = s
}

// drop ends s: it is no longer current (Publish and Connected see no
// session until Run has dialled a fresh one), and Run closes its
// connection.
func (p *Publisher) drop(s *session) {
	s.breakOff()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sess == s {
		p.sess = nil
		p.ready = make(chan struct{})
	}
}

func (p *Publisher) current() (*session, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sess, p.ready
}

// Sessions is how many sessions (connection and confirm channel) Run has
// opened so far: one more each time a session is replaced.
func (p *Publisher) Sessions() uint64 { return p.sessions.Load() }

// Connected reports whether a session is open now.
func (p *Publisher) Connected() bool {
	s, _ := p.current()
	return s != nil
}

// WaitConnected waits until a session is open or ctx ends.
func (p *Publisher) WaitConnected(ctx context.Context) error {
	_, ready := p.current()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Publish sends msgs to exchange, persistent and mandatory, all before
// waiting for any confirm, then waits up to confirmTimeout for the confirms.
// It returns one error per message: nil only for a message the broker
// confirmed (acked) and did not return as unroutable. Once a chunk has
// ended the session, the chunks after it are not sent (ErrNotConnected).
func (p *Publisher) Publish(ctx context.Context, exchange string, msgs []Message, confirmTimeout time.Duration) []error {
	p.publishMu.Lock()
	defer p.publishMu.Unlock()
	errs := make([]error, len(msgs))
	sess, _ := p.current()
	for start := 0; start < len(msgs); start += p.cfg.MaxInFlight {
		if sess == nil || sess.isBroken() {
			for i := start; i < len(msgs); i++ {
				errs[i] = ErrNotConnected
			}
			break
		}
		end := min(start+p.cfg.MaxInFlight, len(msgs))
		p.publishChunk(ctx, sess, exchange, msgs[start:end], errs[start:end], confirmTimeout)
	}
	return errs
}

func (p *Publisher) publishChunk(ctx context.Context, sess *session, exchange string, msgs []Message, errs []error, confirmTimeout time.Duration) {
	drainReturns(sess.returns) // leftovers of an earlier batch say nothing about this one

	confirms := make([]*amqp.DeferredConfirmation, len(msgs))
	for i, m := range msgs {
		pub := m.Publishing
		pub.DeliveryMode = amqp.Persistent
		dc, err := sess.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, m.RoutingKey, true, false, pub)
		if err != nil {
			for j := i; j < len(msgs); j++ {
				errs[j] = fmt.Errorf("publish: %w", err)
			}
			p.drop(sess)
			break
		}
		confirms[i] = dc
	}

	waitCtx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	for i, dc := range confirms {
		if dc == nil {
			continue
		}
		acked, err := dc.WaitContext(waitCtx)
		switch {
		case err != nil:
			errs[i] = fmt.Errorf("%w: %w", ErrConfirmTimeout, err)
		case !acked:
			// A nack, or the channel closed before the confirm: either
			// way the broker did not take responsibility.
			errs[i] = ErrNacked
		}
	}
	// Decided before returns are matched, which may overwrite a message's
	// error.
	fresh := unconfirmed(errs)

	returned := drainReturns(sess.returns)
	if len(returned) > 0 {
		index := make(map[string]int, len(msgs))
		for i, m := range msgs {
			index[m.Publishing.MessageId] = i
		}
		for _, r := range returned {
			i, ok := index[r.MessageId]
			if !ok {
				// A return we cannot place: fail the whole chunk rather
				// than risk calling an unroutable message delivered.
				for j := range errs {
					if errs[j] == nil {
						errs[j] = fmt.Errorf("%w: unmatched return %q", ErrReturned, r.MessageId)
					}
				}
				continue
			}
			errs[i] = fmt.Errorf("%w: %d %s (routing key %s)", ErrReturned, r.ReplyCode, r.ReplyText, r.RoutingKey)
		}
	}
	if fresh {
		p.drop(sess)
	}
}

// unconfirmed reports whether a chunk's errors call for a fresh session: a
// confirm that did not come in time leaves this session's confirms in doubt
// (and a late return could be matched to a later batch), and a channel
// nacked while it stays open may go on being nacked until it is reopened
// (a quorum queue's leader election seen from a channel that began
// publishing during it). A return does not: the message was confirmed,
// only routed nowhere, and a new channel would route it no better.
func unconfirmed(errs []error) bool {
	for _, err := range errs {
		if errors.Is(err, ErrConfirmTimeout) || errors.Is(err, ErrNacked) {
			return true
		}
	}
	return false
}

func drainReturns(c <-chan amqp.Return) []amqp.Return {
	var out []amqp.Return
	for {
		select {
		case r, ok := <-c:
			if !ok {
				return out
			}
			out = append(out, r)
		default:
			return out
		}
	}
}
