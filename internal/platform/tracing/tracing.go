// Package tracing is Epoch's OpenTelemetry tracing: the process's tracer
// provider from the standard OTEL_* environment, the spans of a Postgres
// transaction and its statements (pgx's tracer hooks), the W3C trace
// context kept with an outbox row and carried in AMQP headers, and the
// trace_id and span_id of every log line written inside a span.
//
// With no exporter configured nothing is recorded: every span started is
// the no-op one, and the code on the hot paths asks Recording (one context
// lookup) before it builds anything a span would carry.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/catacloud/epoch/internal/platform/throttle"
)

// ScopeName names the instrumentation scope of Epoch's own spans.
const ScopeName = "github.com/catacloud/epoch"

// enabled is whether Setup installed an exporting provider.
var enabled atomic.Bool

// Enabled reports whether this process exports traces. Code that would
// only add work for a tracer (wrapping a handler, a pgx hook) is left out
// when it does not.
func Enabled() bool { return enabled.Load() }

// Tracer is Epoch's tracer from the process's provider.
func Tracer() trace.Tracer { return otel.Tracer(ScopeName) }

// Propagator is the one propagation format: W3C trace context, as
// DESIGN.md's message contract names it.
var Propagator = propagation.TraceContext{}

// Recording reports whether ctx holds a span being recorded: the spans
// Epoch starts below a request or a delivery are started only then, so
// background loops (the relay's cycles, a pass of healing) make no traces
// of their own.
func Recording(ctx context.Context) bool {
	return trace.SpanFromContext(ctx).IsRecording()
}

// Setup installs the tracer provider the standard environment asks for and
// returns what flushes and stops it. service is the service.name unless
// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name another.
//
// Exporting is on when OTEL_TRACES_EXPORTER is "otlp", or when it is unset
// and an OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); it is off with "none", with
// OTEL_SDK_DISABLED=true, and when nothing is set, so a process nobody
// pointed at a collector does not try one on localhost. The exporter
// speaks OTLP over HTTP (http/protobuf) and reads the rest of its
// OTEL_EXPORTER_OTLP_* settings itself; the sampler reads
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default: parent-based,
// always on), the batch processor OTEL_BSP_*.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	on, err := exporting()
	if err != nil || !on {
		return noop, err
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return noop, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service), semconv.ServiceNamespace("epoch")),
		resource.WithProcessPID(), resource.WithHost(), resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return noop, fmt.Errorf("trace resource: %w", err)
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(provider)
	otel.SetTextMapPropagator(Propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(exportFailed))
	enabled.Store(true)
	return provider.Shutdown, nil
}

// exporting reads whether the environment asks for exported traces.
func exporting() (bool, error) {
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	switch exporter := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); exporter {
	case "none":
		return false, nil
	case "":
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return false, nil
		}
	case "otlp":
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: this build exports with otlp or none", exporter)
	}
	protocol := cmpOr(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf")
	if protocol != "http/protobuf" {
		return false, fmt.Errorf("OTLP protocol %q: this build speaks http/protobuf only (port 4318 of a collector or Jaeger)", protocol)
	}
	return true, nil
}

func cmpOr(values ...string) string {
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// exportFailedLog lets exportFailed log once a minute at most.
var exportFailedLog = &throttle.Every{Interval: time.Minute}

// exportFailed logs what the SDK could not do (a collector away), once a
// minute at most: spans are dropped, the service goes on.
func exportFailed(err error) {
	if !exportFailedLog.Allow() {
		return
	}
	slog.Warn("tracing: spans not exported", "error", err)
}
