package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestTheEnvironmentSaysWhetherToExport(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		on      bool
		problem string
	}{
		{env: nil, on: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, on: false},
		{env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, on: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, problem: `OTEL_TRACES_EXPORTER="zipkin"`},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, problem: `protocol "grpc"`},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, problem: `protocol "http/json"`},
	} {
		for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
			t.Setenv(k, tc.env[k])
		}
		on, err := exporting()
		if tc.problem != "" {
			require.ErrorContains(t, err, tc.problem, "%v", tc.env)
			continue
		}
		require.NoError(t, err, "%v", tc.env)
		require.Equal(t, tc.on, on, "%v", tc.env)
	}
}

// withRecorder records the spans of this test's tracer and turns Enabled on
// for the test.
func withRecorder(t *testing.T) (*tracetest.SpanRecorder, trace.Tracer) {
	rec := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	enabled.Store(true)
	t.Cleanup(func() { enabled.Store(false) })
	return rec, provider.Tracer("test")
}

func TestALogLineInsideASpanCarriesItsIDs(t *testing.T) {
	_, tracer := withRecorder(t)
	var out bytes.Buffer
	logger := slog.New(LogHandler(slog.NewJSONHandler(&out, nil))).With("role", "test")
	ctx, span := tracer.Start(context.Background(), "work")
	logger.InfoContext(ctx, "inside")
	span.End()
	logger.InfoContext(context.Background(), "outside")
	logger.Info("no context")

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3)
	var inside map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &inside))
	require.Equal(t, span.SpanContext().TraceID().String(), inside["trace_id"])
	require.Equal(t, span.SpanContext().SpanID().String(), inside["span_id"])
	require.Equal(t, "test", inside["role"])
	for _, line := range lines[1:] {
		require.NotContains(t, line, "trace_id")
	}
}

func TestAKeptContextGoesThroughHeadersIntoAChild(t *testing.T) {
	rec, tracer := withRecorder(t)
	ctx, request := tracer.Start(context.Background(), "request")
	kept := Of(ctx)
	request.End()
	require.Regexp(t, `^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`, kept.Traceparent)
	require.Equal(t, Context{}, Of(context.Background()), "no span: nothing to keep")

	headers := kept.SetHeaders(nil)
	require.Equal(t, kept.Traceparent, headers[TraceparentHeader])
	_, child := tracer.Start(Propagator.Extract(context.Background(), HeaderCarrier(headers)), "process")
	child.End()
	ended := rec.Ended()
	require.Len(t, ended, 2)
	require.Equal(t, request.SpanContext().TraceID(), ended[1].SpanContext().TraceID())
	require.Equal(t, request.SpanContext().SpanID(), ended[1].Parent().SpanID())
	require.Nil(t, Context{}.SetHeaders(nil), "nothing to carry: no headers made")
}

// Headers come from whoever can publish to the exchange: only a valid,
// bounded W3C traceparent in a string becomes a parent.
func TestHostileHeadersMakeNoParent(t *testing.T) {
	valid := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for name, h := range map[string]amqp.Table{
		"none":             nil,
		"not a string":     {TraceparentHeader: int64(42)},
		"malformed":        {TraceparentHeader: "00-zz-yy-01"},
		"all-zero trace":   {TraceparentHeader: "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		"too long":         {TraceparentHeader: valid + strings.Repeat(" ", 2000)},
		"unknown version":  {TraceparentHeader: "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"table, not value": {TraceparentHeader: amqp.Table{"x": "y"}},
	} {
		ctx := Propagator.Extract(context.Background(), HeaderCarrier(h))
		require.False(t, trace.SpanContextFromContext(ctx).IsValid(), name)
	}
	ctx := Propagator.Extract(context.Background(), HeaderCarrier(amqp.Table{TraceparentHeader: []byte(valid)}))
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", trace.SpanContextFromContext(ctx).TraceID().String(), "bytes are read as text")
	// An oversized tracestate is dropped; the traceparent still stands.
	ctx = Propagator.Extract(context.Background(), HeaderCarrier(amqp.Table{TraceparentHeader: valid, TracestateHeader: strings.Repeat("a=b,", 400)}))
	require.True(t, trace.SpanContextFromContext(ctx).IsValid())
	require.Empty(t, trace.SpanContextFromContext(ctx).TraceState().String())
}

// Without an exporter the hooks are not installed at all.
func TestNothingIsAddedWhenNotExporting(t *testing.T) {
	require.False(t, Enabled())
	require.Nil(t, PGX(nil, "epoch", "127.0.0.1", 5432))
	h := http.NewServeMux()
	require.Same(t, h, HTTPHandler(h))
	ctx, span := StartTransaction(context.Background())
	require.Nil(t, span)
	require.Equal(t, context.Background(), ctx)
}

// The relay reads a kept context without a carrier: it must read what the
// propagator reads, and refuse what the propagator refuses.
func TestAKeptContextReadsAsThePropagatorReadsIt(t *testing.T) {
	_, tracer := withRecorder(t)
	ctx, span := tracer.Start(context.Background(), "request")
	defer span.End()
	kept := Of(ctx)
	kept.Tracestate = "vendor=value"
	sc, ok := kept.SpanContext()
	require.True(t, ok)
	want := trace.SpanContextFromContext(Propagator.Extract(context.Background(), HeaderCarrier(kept.SetHeaders(nil))))
	require.True(t, want.Equal(sc), "%v vs %v", want, sc)
	require.True(t, sc.IsRemote() && sc.IsSampled())
	require.Equal(t, "vendor=value", sc.TraceState().String())

	valid := kept.Traceparent
	for name, tp := range map[string]string{
		"empty": "", "short": valid[:54], "version": "01" + valid[2:], "not hex": valid[:3] + strings.Repeat("g", 32) + valid[35:],
		"zero trace": "00-" + strings.Repeat("0", 32) + valid[35:], "separator": valid[:35] + "+" + valid[36:],
	} {
		_, ok := Context{Traceparent: tp}.SpanContext()
		require.False(t, ok, name)
	}
	sc, ok = Context{Traceparent: valid, Tracestate: "not a state"}.SpanContext()
	require.True(t, ok, "a bad tracestate is dropped, not the parent")
	require.Empty(t, sc.TraceState().String())
}
