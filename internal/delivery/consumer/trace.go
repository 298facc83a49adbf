package consumer

import (
	"context"

	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/catacloud/epoch/internal/platform/tracing"
)

// startProcess starts the process span of each delivery of a batch whose
// headers carry a trace context (the request's that wrote its event), as a
// child of that context: the command's trace goes on into this subscriber.
// Nothing when this process exports no traces.
func (c *Consumer) startProcess(ctx context.Context, notices []notice) {
	if !tracing.Enabled() {
		return
	}
	for i := range notices {
		d := notices[i].d
		parent := tracing.Propagator.Extract(ctx, tracing.HeaderCarrier(d.Headers))
		if !trace.SpanContextFromContext(parent).IsValid() {
			continue
		}
		notices[i].ctx, notices[i].span = tracing.Tracer().Start(parent, "process "+c.queue,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				semconv.MessagingSystemRabbitMQ,
				semconv.MessagingOperationTypeProcess,
				semconv.MessagingOperationName("process"),
				semconv.MessagingDestinationName(d.Exchange),
				semconv.MessagingDestinationSubscriptionName(c.queue),
				semconv.MessagingRabbitMQDestinationRoutingKey(d.RoutingKey),
				semconv.MessagingRabbitMQMessageDeliveryTag(int(d.DeliveryTag)),
				semconv.MessagingMessageID(d.MessageId),
				semconv.MessagingMessageBodySize(len(d.Body)),
				semconv.MessagingBatchMessageCount(len(notices)),
			))
	}
}

// batchContext is the context the transaction applying a whole batch runs
// in: the first traced delivery's process span, so the transaction and its
// statements are inside it; the other traced deliveries' spans link to
// that one. ctx when none is traced.
func batchContext(ctx context.Context, notices []notice) context.Context {
	var first trace.Span
	for _, n := range notices {
		switch {
		case n.span == nil:
		case first == nil:
			first = n.span
			ctx = trace.ContextWithSpan(ctx, n.span)
		default:
			n.span.AddLink(trace.Link{SpanContext: first.SpanContext()})
		}
	}
	return ctx
}

// context is the context of work on one delivery alone (its transaction
// when it is isolated, a line logged about it): its process span's, so the
// work is on the command's trace.
func (n *notice) context(ctx context.Context) context.Context {
	if n.span == nil {
		return ctx
	}
	return n.ctx
}

// endProcess ends the deliveries' process spans, with the error of those
// that failed.
func endProcess(notices []notice, failed map[uint64]error) {
	for _, n := range notices {
		tracing.End(n.span, failed[n.d.DeliveryTag])
	}
}
