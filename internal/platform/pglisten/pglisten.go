// Package pglisten turns Postgres NOTIFYs into calls: it LISTENs on a set
// of channels over one connection of its own and reconnects after errors.
// A notification is a hint, not a record: those sent while the connection
// is down are lost, which is why every (re)connect is reported too, so the
// caller can look again at what it was waiting for.
package pglisten

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/platform/backoff"
)

// Config is what Run needs. Pool, Channels and Logger are required.
type Config struct {
	Pool     *pgxpool.Pool
	Channels []string
	Logger   *slog.Logger
	// OnNotify is called for every notification, on Run's goroutine: it
	// must not block.
	OnNotify func(channel, payload string)
	// OnConnect is called once LISTEN succeeded, after every (re)connect.
	OnConnect func()
	// OnDisconnect is called when a listening connection is lost.
	OnDisconnect func()
	// MinBackoff and MaxBackoff bound the wait before reconnecting.
	// Defaults backoff.DefaultMin and backoff.DefaultMax.
	MinBackoff, MaxBackoff time.Duration
}

// Run listens until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Pool == nil || len(cfg.Channels) == 0 || cfg.Logger == nil {
		return errors.New("pglisten: Pool, Channels and Logger are required")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = backoff.DefaultMin
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, backoff.DefaultMax)
	}
	reconnect := backoff.New(cfg.MinBackoff, cfg.MaxBackoff)
	for ctx.Err() == nil {
		listening, err := listenOnce(ctx, cfg)
		if listening && cfg.OnDisconnect != nil {
			cfg.OnDisconnect()
		}
		if ctx.Err() != nil {
			return nil
		}
		if listening {
			reconnect.Reset()
		}
		wait := reconnect.Next()
		cfg.Logger.WarnContext(ctx, "listen connection lost", "channels", cfg.Channels, "error", err, "retry_in", wait.String())
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
	return nil
}

// listenOnce listens until the connection breaks; listening reports
// whether LISTEN had succeeded.
func listenOnce(ctx context.Context, cfg Config) (listening bool, err error) {
	pooled, err := cfg.Pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	conn := pooled.Hijack() // LISTEN state must not go back to the pool
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range cfg.Channels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return false, err
		}
	}
	if cfg.OnConnect != nil {
		cfg.OnConnect()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		if cfg.OnNotify != nil {
			cfg.OnNotify(n.Channel, n.Payload)
		}
	}
}
