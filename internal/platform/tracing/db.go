package tracing

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// PGX is a pool's tracer: inner (nil: none) and, when this process exports
// traces, a span for each statement sent inside a recorded span (a
// request's, a delivery's, a transaction's).
func PGX(inner pgx.QueryTracer) pgx.QueryTracer {
	if !Enabled() {
		return inner
	}
	if inner == nil {
		return statementTracer{}
	}
	return multitracer.New(inner, statementTracer{})
}

// StatementName is the name sqlc writes at the start of a query's SQL
// ("-- name: OutboxInsert :batchexec"), or the statement's first words: a
// statement's span name, and what an error names.
func StatementName(sql string) string {
	if name, ok := strings.CutPrefix(sql, "-- name: "); ok {
		return strings.Fields(name)[0]
	}
	words := strings.Fields(sql)
	return strings.Join(words[:min(len(words), 3)], " ")
}

// StartTransaction starts the span of a transaction about to begin, when
// ctx is recorded; span is nil otherwise. The transaction's statements are
// sent with ctx, so their spans are its children.
func StartTransaction(ctx context.Context) (context.Context, trace.Span) {
	if !Recording(ctx) {
		return ctx, nil
	}
	ctx, span := Tracer().Start(ctx, "transaction", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(semconv.DBSystemNamePostgreSQL))
	return ctx, span
}

// End ends span with err as its status; nil span: nothing.
func End(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// statementTracer makes the statements' spans. A pipelined batch's
// statements are sent together and answered in order, so each one's span
// runs from the previous answer (the first: the send) to its own.
type statementTracer struct{}

type statementSpanKey struct{}

type batchSpans struct {
	from time.Time // the send, then the last answer read
	size int
}

func attrs(conn *pgx.Conn, sql string, extra ...attribute.KeyValue) []attribute.KeyValue {
	cfg := conn.Config()
	a := []attribute.KeyValue{
		semconv.DBSystemNamePostgreSQL,
		semconv.DBNamespace(cfg.Database),
		semconv.DBQuerySummary(StatementName(sql)),
		semconv.DBQueryText(sql),
		semconv.ServerAddress(cfg.Host),
		semconv.ServerPort(int(cfg.Port)),
	}
	return append(a, extra...)
}

func endStatement(span trace.Span, err error, at time.Time) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End(trace.WithTimestamp(at))
}

// TraceQueryStart implements pgx.QueryTracer.
func (statementTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !Recording(ctx) {
		return ctx
	}
	ctx, span := Tracer().Start(ctx, StatementName(data.SQL), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrs(conn, data.SQL)...))
	return context.WithValue(ctx, statementSpanKey{}, span)
}

// TraceQueryEnd implements pgx.QueryTracer.
func (statementTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if span, ok := ctx.Value(statementSpanKey{}).(trace.Span); ok {
		endStatement(span, data.Err, time.Now())
	}
}

// TraceBatchStart implements pgx.BatchTracer.
func (statementTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if !Recording(ctx) {
		return ctx
	}
	return context.WithValue(ctx, statementSpanKey{}, &batchSpans{from: time.Now(), size: data.Batch.Len()})
}

// TraceBatchQuery implements pgx.BatchTracer: called as each answer is read.
func (statementTracer) TraceBatchQuery(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	b, ok := ctx.Value(statementSpanKey{}).(*batchSpans)
	if !ok {
		return
	}
	now := time.Now()
	_, span := Tracer().Start(ctx, StatementName(data.SQL), trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(b.from),
		trace.WithAttributes(attrs(conn, data.SQL, semconv.DBOperationBatchSize(b.size))...))
	endStatement(span, data.Err, now)
	b.from = now
}

// TraceBatchEnd implements pgx.BatchTracer.
func (statementTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TraceCopyFromStart implements pgx.CopyFromTracer.
func (statementTracer) TraceCopyFromStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	if !Recording(ctx) {
		return ctx
	}
	table := data.TableName.Sanitize()
	ctx, span := Tracer().Start(ctx, "COPY "+table, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrs(conn, "COPY "+table, semconv.DBCollectionName(table))...))
	return context.WithValue(ctx, statementSpanKey{}, span)
}

// TraceCopyFromEnd implements pgx.CopyFromTracer.
func (statementTracer) TraceCopyFromEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromEndData) {
	if span, ok := ctx.Value(statementSpanKey{}).(trace.Span); ok {
		endStatement(span, data.Err, time.Now())
	}
}
