package tracing

import (
	"context"
	"encoding/hex"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The W3C trace context's headers, as an outbox row keeps them and an AMQP
// message carries them.
const (
	TraceparentHeader = "traceparent"
	TracestateHeader  = "tracestate"
)

// maxHeader bounds a trace context header taken from outside: a
// traceparent is 55 characters and W3C caps a tracestate at 512; anything
// longer is no trace context of ours.
const maxHeader = 1024

// Context is a trace context to keep (an outbox row's): empty when there
// is none.
type Context struct {
	Traceparent, Tracestate string
}

// Of is the trace context of ctx's span (the request's, a delivery's), to
// keep with what it writes; empty when ctx carries none.
func Of(ctx context.Context) Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return Context{}
	}
	c := propagation.MapCarrier{}
	Propagator.Inject(ctx, c)
	return Context{Traceparent: c[TraceparentHeader], Tracestate: c[TracestateHeader]}
}

// SpanContext is c as the remote parent it names, read without a carrier:
// the relay reads one per message. ok is false when c is not a version-00
// W3C traceparent (what Of writes); a tracestate that does not parse is
// dropped.
func (c Context) SpanContext() (sc trace.SpanContext, ok bool) {
	p := c.Traceparent
	if len(p) != 55 || p[:3] != "00-" || p[35] != '-' || p[52] != '-' {
		return trace.SpanContext{}, false
	}
	traceID, err1 := trace.TraceIDFromHex(p[3:35])
	spanID, err2 := trace.SpanIDFromHex(p[36:52])
	flags, err3 := hex.DecodeString(p[53:55])
	if err1 != nil || err2 != nil || err3 != nil {
		return trace.SpanContext{}, false
	}
	cfg := trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.TraceFlags(flags[0]) & trace.FlagsSampled, Remote: true}
	if c.Tracestate != "" {
		if state, err := trace.ParseTraceState(c.Tracestate); err == nil {
			cfg.TraceState = state
		}
	}
	sc = trace.NewSpanContext(cfg)
	return sc, sc.IsValid()
}

// SetHeaders puts c into an AMQP message's headers (nothing when empty),
// making the table when h is nil.
func (c Context) SetHeaders(h amqp.Table) amqp.Table {
	if c.Traceparent == "" {
		return h
	}
	if h == nil {
		h = amqp.Table{}
	}
	HeaderCarrier(h).Set(TraceparentHeader, c.Traceparent)
	if c.Tracestate != "" {
		HeaderCarrier(h).Set(TracestateHeader, c.Tracestate)
	}
	return h
}

// HeaderCarrier is an AMQP message's headers as OpenTelemetry's carrier
// (amqp091-go has none): Propagator.Extract(ctx, HeaderCarrier(d.Headers))
// is the trace context a delivery brings. The headers come from whoever
// could publish to the exchange: Get takes only text of a bounded length,
// and the propagator keeps only a valid W3C traceparent.
type HeaderCarrier amqp.Table

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get implements propagation.TextMapCarrier.
func (c HeaderCarrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		if len(v) <= maxHeader {
			return v
		}
	case []byte:
		if len(v) <= maxHeader {
			return string(v)
		}
	}
	return ""
}

// Set implements propagation.TextMapCarrier.
func (c HeaderCarrier) Set(key, value string) { c[key] = value }

// Keys implements propagation.TextMapCarrier.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// EventPosition is the attribute of an event's position in the store, on
// the spans of its delivery: what min_position and the operations API
// speak of.
func EventPosition(position int64) attribute.KeyValue {
	return attribute.Int64("epoch.event.position", position)
}
