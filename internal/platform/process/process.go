// Package process is the life of a binary (cmd/api, cmd/worker): its
// --help, its configuration from the environment, its JSON logger, and a
// run that ends on SIGTERM or SIGINT.
package process

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/kelseyhightower/envconfig"
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
	if err := run(ctx, cfg, logger); err != nil {
		logger.Error(name+" stopped", "error", err)
		stop()
		os.Exit(1)
	}
	logger.Info(name + " stopped")
}

// NewLogger is a binary's logger: JSON lines to w, durations written as Go
// writes them ("5s", "150ms"): slog's JSON handler writes a time.Duration
// as its nanoseconds, which nobody reads at a glance.
func NewLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: durationAsText}))
}

func durationAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
