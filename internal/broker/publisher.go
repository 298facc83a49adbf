package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
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
	// 100ms and 5s).
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
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Second
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
type Publisher struct {
	cfg    PublisherConfig
	logger *slog.Logger

	publishMu sync.Mutex // sending and waiting for confirms, one caller at a time

	mu    sync.Mutex
	sess  *session
	ready chan struct{} // closed while sess is set
}

// session is one connection and its confirm channel. The fields after
// once belong to publishMu.
type session struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
	broken  chan struct{} // closed by Publish to force a fresh session
	once    sync.Once

	flights     []*Flight              // sent and not yet waited for, oldest first
	unconfirmed int                    // their messages still awaiting a confirm
	returned    map[string]amqp.Return // returns taken off the channel, by message id, not yet matched
}

func (s *session) breakOff() { s.once.Do(func() { close(s.broken) }) }

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
	backoff := p.cfg.MinBackoff
	for {
		sess, err := p.dial()
		if err != nil {
			p.logger.WarnContext(ctx, "broker: connect failed", "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, p.cfg.MaxBackoff)
			continue
		}
		backoff = p.cfg.MinBackoff
		connClosed := sess.conn.NotifyClose(make(chan *amqp.Error, 1))
		chClosed := sess.ch.NotifyClose(make(chan *amqp.Error, 1))
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

// Dial opens a connection with heartbeats, a connect timeout and a name the
// management console shows.
func Dial(url, connectionName string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(connectionName)
	conn, err := amqp.DialConfig(url, amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Properties: props,
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return conn, nil
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
	return &session{conn: conn, ch: ch, returns: returns, broken: make(chan struct{}), returned: make(map[string]amqp.Return)}, nil
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

func (p *Publisher) current() (*session, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sess, p.ready
}

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
// confirmed (acked) and did not return as unroutable.
func (p *Publisher) Publish(ctx context.Context, exchange string, msgs []Message, confirmTimeout time.Duration) []error {
	return p.Send(ctx, exchange, msgs, confirmTimeout).Wait(ctx, confirmTimeout)
}

// Flight is a batch Send sent: its messages are on their way, their
// confirms may still be to come.
type Flight struct {
	p        *Publisher
	sess     *session
	msgs     []Message
	errs     []error
	confirms []*amqp.DeferredConfirmation
	last     <-chan struct{} // closed once the last message's confirm came
	waited   bool
}

// Send sends msgs to exchange, persistent and mandatory, and returns
// without waiting for their confirms, so the caller can send the next
// batch meanwhile: flights of one Publisher go out in the order sent, on
// one channel, so a queue receives them in that order. Every flight must
// be waited for (Wait), in the order sent. At most MaxInFlight messages
// await confirms at once: Send first waits for older flights when msgs
// would exceed that, and sends a larger batch in chunks, waiting for each
// but the last (confirmTimeout bounds those waits).
func (p *Publisher) Send(ctx context.Context, exchange string, msgs []Message, confirmTimeout time.Duration) *Flight {
	p.publishMu.Lock()
	defer p.publishMu.Unlock()
	f := &Flight{p: p, msgs: msgs, errs: make([]error, len(msgs)), confirms: make([]*amqp.DeferredConfirmation, len(msgs))}
	sess, _ := p.current()
	if sess == nil {
		for i := range f.errs {
			f.errs[i] = ErrNotConnected
		}
		return f
	}
	f.sess = sess
	for start := 0; start < len(msgs); start += p.cfg.MaxInFlight {
		end := min(start+p.cfg.MaxInFlight, len(msgs))
		// Room for this chunk's returns (see dial): wait for older flights,
		// and for this one's earlier chunks, until it fits.
		for len(sess.flights) > 0 && sess.unconfirmed+(end-start) > p.cfg.MaxInFlight {
			sess.flights[0].waitLocked(ctx, confirmTimeout)
		}
		if start > 0 {
			f.settleChunk(ctx, 0, start, confirmTimeout)
		}
		f.sendChunk(ctx, exchange, start, end)
	}
	sess.flights = append(sess.flights, f)
	return f
}

// sendChunk publishes msgs[start:end] with deferred confirms.
func (f *Flight) sendChunk(ctx context.Context, exchange string, start, end int) {
	sess := f.sess
	for i := start; i < end; i++ {
		pub := f.msgs[i].Publishing
		pub.DeliveryMode = amqp.Persistent
		dc, err := sess.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, f.msgs[i].RoutingKey, true, false, pub)
		if err != nil {
			for j := i; j < len(f.msgs); j++ {
				f.errs[j] = fmt.Errorf("publish: %w", err)
			}
			sess.breakOff()
			break
		}
		f.confirms[i] = dc
		sess.unconfirmed++
		f.last = dc.Done()
	}
}

// Confirmed is closed once the broker answered the flight's last message
// (messages are confirmed in order, so usually the others too); for a
// flight that sent nothing, at once.
func (f *Flight) Confirmed() <-chan struct{} {
	if f.last == nil {
		closed := make(chan struct{})
		close(closed)
		return closed
	}
	return f.last
}

// Wait waits up to confirmTimeout for the flight's confirms and returns one
// error per message: nil only for a message the broker confirmed (acked)
// and did not return as unroutable. Waiting again returns the same.
func (f *Flight) Wait(ctx context.Context, confirmTimeout time.Duration) []error {
	f.p.publishMu.Lock()
	defer f.p.publishMu.Unlock()
	// Older flights first: their returns must be taken before this
	// flight's are read.
	if f.sess != nil {
		for len(f.sess.flights) > 0 && !f.waited {
			f.sess.flights[0].waitLocked(ctx, confirmTimeout)
		}
	}
	return f.errs
}

// waitLocked waits for f's confirms (publishMu held) and takes f off its
// session's flights.
func (f *Flight) waitLocked(ctx context.Context, confirmTimeout time.Duration) {
	if f.waited {
		return
	}
	f.waited = true
	if f.sess == nil {
		return
	}
	f.settleChunk(ctx, 0, len(f.msgs), confirmTimeout)
	sess := f.sess
	for i, g := range sess.flights {
		if g == f {
			sess.flights = append(sess.flights[:i], sess.flights[i+1:]...)
			break
		}
	}
}

// settleChunk waits for the confirms of msgs[start:end] not yet settled
// and matches the broker's returns to them.
func (f *Flight) settleChunk(ctx context.Context, start, end int, confirmTimeout time.Duration) {
	sess := f.sess
	waitCtx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	for i := start; i < end; i++ {
		dc := f.confirms[i]
		if dc == nil {
			continue
		}
		f.confirms[i] = nil
		sess.unconfirmed--
		acked, err := dc.WaitContext(waitCtx)
		switch {
		case err != nil:
			f.errs[i] = fmt.Errorf("%w: %w", ErrConfirmTimeout, err)
		case !acked:
			// A nack, or the channel closed before the confirm: either
			// way the broker did not take responsibility.
			f.errs[i] = ErrNacked
		}
	}

	// A message's return comes before its confirm, so every return of
	// these messages is in the channel now, or in returned already.
	for _, r := range drainReturns(sess.returns) {
		sess.returned[r.MessageId] = r
	}
	for i := start; i < end; i++ {
		id := f.msgs[i].Publishing.MessageId
		if r, ok := sess.returned[id]; ok {
			delete(sess.returned, id)
			f.errs[i] = fmt.Errorf("%w: %d %s (routing key %s)", ErrReturned, r.ReplyCode, r.ReplyText, r.RoutingKey)
		}
	}
	for _, err := range f.errs[start:end] {
		if errors.Is(err, ErrConfirmTimeout) {
			// Confirms of this session are in doubt; a fresh session keeps
			// late returns from being matched to a later batch.
			sess.breakOff()
			break
		}
	}
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
