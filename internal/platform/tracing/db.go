package tracing

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// PGX is a pool's tracer: inner (nil: none) and, when this process exports
// traces, a span for each round trip sent inside a recorded span (a
// request's, a delivery's, a transaction's). database, host and port name
// the pool's server on its transactions' spans (a process's pools all
// reach one server).
func PGX(inner pgx.QueryTracer, database, host string, port uint16) pgx.QueryTracer {
	if !Enabled() {
		return inner
	}
	server := []attribute.KeyValue{
		semconv.DBSystemNamePostgreSQL,
		semconv.DBNamespace(database),
		semconv.ServerAddress(host),
		semconv.ServerPort(int(port)),
	}
	transactionAttributes.Store(&server)
	t := statementTracer{}
	if inner == nil {
		return t
	}
	return multitracer.New(inner, t)
}

// StatementName is the name sqlc writes at the start of a query's SQL
// ("-- name: OutboxInsert :batchexec"), or the statement's first words: a
// statement's name on its span, and what an error names.
func StatementName(sql string) string {
	if name, ok := strings.CutPrefix(sql, "-- name: "); ok {
		if end := strings.IndexAny(name, " \t\n"); end >= 0 {
			return name[:end]
		}
		return name
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
	attrs := []attribute.KeyValue{semconv.DBSystemNamePostgreSQL}
	if server := transactionAttributes.Load(); server != nil {
		attrs = *server
	}
	ctx, span := Tracer().Start(ctx, "transaction", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return ctx, span
}

// transactionAttributes are the server's attributes of the last pool made
// (a process's pools all reach one server): on each transaction's span,
// not on each of its round trips'.
var transactionAttributes atomic.Pointer[[]attribute.KeyValue]

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

// statementTracer makes the statements' spans: one per round trip, since
// a transaction's statements go to Postgres pipelined, several in one
// batch (BEGIN, the writes, COMMIT), and the round trip is what a command
// waits for. The span is named by its statements, in order
// ("BEGIN, EventAppend, OutboxInsert"), which is also its
// db.query.summary (the sqlc names, which find each query in queries/;
// the queries' text, kilobytes with their comments, is left out).
type statementTracer struct{}

type statementSpanKey struct{}

// maxNamed is how many statements a round trip's span names.
const maxNamed = 8

// start starts a round trip's span: the system and the statements' names
// only; the server's attributes are on the transaction's span, once.
func (t statementTracer) start(ctx context.Context, names string, extra ...attribute.KeyValue) context.Context {
	attrs := make([]attribute.KeyValue, 0, 2+len(extra))
	attrs = append(append(attrs, semconv.DBSystemNamePostgreSQL, semconv.DBQuerySummary(names)), extra...)
	ctx, span := Tracer().Start(ctx, names, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return context.WithValue(ctx, statementSpanKey{}, span)
}

func end(ctx context.Context, err error) {
	if span, ok := ctx.Value(statementSpanKey{}).(trace.Span); ok {
		End(span, err)
	}
}

// TraceQueryStart implements pgx.QueryTracer.
func (t statementTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !Recording(ctx) {
		return ctx
	}
	return t.start(ctx, StatementName(data.SQL))
}

// TraceQueryEnd implements pgx.QueryTracer.
func (statementTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	end(ctx, data.Err)
}

// TraceBatchStart implements pgx.BatchTracer.
func (t statementTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if !Recording(ctx) {
		return ctx
	}
	queries := data.Batch.QueuedQueries
	var names strings.Builder
	for i, q := range queries[:min(len(queries), maxNamed)] {
		if i > 0 {
			names.WriteString(", ")
		}
		names.WriteString(StatementName(q.SQL))
	}
	if len(queries) > maxNamed {
		names.WriteString(", …")
	}
	return t.start(ctx, names.String(), semconv.DBOperationBatchSize(len(queries)))
}

// TraceBatchQuery implements pgx.BatchTracer.
func (statementTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

// TraceBatchEnd implements pgx.BatchTracer: the batch's answers are all
// read.
func (statementTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	end(ctx, data.Err)
}

// TraceCopyFromStart implements pgx.CopyFromTracer.
func (t statementTracer) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	if !Recording(ctx) {
		return ctx
	}
	table := data.TableName.Sanitize()
	return t.start(ctx, "COPY "+table, semconv.DBCollectionName(table))
}

// TraceCopyFromEnd implements pgx.CopyFromTracer.
func (statementTracer) TraceCopyFromEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromEndData) {
	end(ctx, data.Err)
}
