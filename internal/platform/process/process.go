// Package process is the life of a binary (cmd/api, cmd/worker): its
// --help, its configuration from the environment, its JSON logger, its
// tracing (the standard OTEL_* environment: see tracing.Setup), and a run
// that ends on SIGTERM or SIGINT.
package process

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/catacloud/epoch/internal/platform/tracing"
)

// EnvPrefix prefixes every setting: EPOCH_DATABASE_URL and so on.
const EnvPrefix = "epoch"

// Main runs binary name and exits. --help prints about and the settings of
// C. The settings are read from the environment and, when check is not nil,
// checked by it (a bad one exits 2). run then runs until SIGTERM or SIGINT
// cancels its context; an error from it exits 1.
func Main[C any](name, about string, check func(*C) error, run func(ctx context.Context, cfg C, logger *slog.Logger) error) {
	var cfg C
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-h", "-help", "--help", "help":
			fmt.Println(about + " It is configured by the environment:")
			_ = envconfig.Usage(EnvPrefix, &cfg)
			fmt.Println("\nTraces are exported by OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or\n" +
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_TRACES_EXPORTER=otlp) is set, with the\n" +
				"other standard OTEL_* variables (OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_BSP_*);\n" +
				"without them, nothing is traced.")
			return
		default:
			fmt.Fprintf(os.Stderr, "%s takes no arguments (try --help); got %q\n", name, os.Args[1])
			os.Exit(2)
		}
	}
	tuneGC()
	logger := NewLogger(os.Stdout)
	// Code without a logger of its own (a lost wake-up: outbox.Enqueue)
	// logs through slog's default, the same JSON to stdout.
	slog.SetDefault(logger)
	err := envconfig.Process(EnvPrefix, &cfg)
	if err == nil && check != nil {
		err = check(&cfg)
	}
	if err != nil {
		logger.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	stopTracing, err := tracing.Setup(ctx, "epoch-"+name)
	if err != nil {
		logger.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	err = run(ctx, cfg, logger)
	flushTracing(stopTracing, logger)
	if err != nil {
		logger.Error(name+" stopped", "error", err)
		stop()
		os.Exit(1)
	}
	logger.Info(name + " stopped")
}

// tracingFlushTimeout bounds the export of the spans still buffered at exit.
const tracingFlushTimeout = 5 * time.Second

func flushTracing(shutdown func(context.Context) error, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlushTimeout)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		logger.Warn("tracing: spans lost at exit", "error", err)
	}
}

// NewLogger is a binary's logger: JSON lines to w, durations written as Go
// writes them ("5s", "150ms"): slog's JSON handler writes a time.Duration
// as its nanoseconds, which nobody reads at a glance. A line logged with a
// context inside a span carries its trace_id and span_id.
func NewLogger(w io.Writer) *slog.Logger {
	return slog.New(tracing.LogHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: durationAsText})))
}

func durationAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
