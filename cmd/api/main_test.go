package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/kelseyhightower/envconfig"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/ops/migrate"
	"github.com/catacloud/epoch/internal/platform/process"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// The api starts on an empty database (applying the migrations), serves,
// and stops cleanly when its context ends (SIGTERM).
func TestRun(t *testing.T) {
	t.Parallel()
	pool, dbURL := testdb.New(t)
	_, err := pool.Exec(t.Context(), "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
	require.NoError(t, err)

	var cfg config
	require.NoError(t, envconfig.Process(process.EnvPrefix, &cfg))
	cfg.DatabaseURL = dbURL
	cfg.HTTPAddr = freeAddr(t)
	cfg.AdminToken = "admin"
	cfg.InlineSubscribers = []string{"storage"}

	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- run(ctx, cfg, slog.New(slog.NewJSONHandler(t.Output(), nil))) }()

	base := "http://" + cfg.HTTPAddr
	require.Eventually(t, func() bool {
		res, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond)

	var migrated int
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT count(*) FROM "+migrate.VersionTable+" WHERE version_id > 0").Scan(&migrated))
	require.Positive(t, migrated)

	r, err := http.NewRequest("POST", base+"/v1/users", strings.NewReader(`{"name":"ada"}`))
	require.NoError(t, err)
	r.Header.Set("Authorization", "Bearer admin")
	res, err := http.DefaultClient.Do(r)
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusCreated, res.StatusCode, "%s", body)
	var user struct{ Token string }
	require.NoError(t, json.Unmarshal(body, &user))

	// storage runs inline here: GET /v1/storage sees an upload at once.
	r, _ = http.NewRequest("POST", base+"/v1/files", strings.NewReader(`{"name":"f","size_bytes":42}`))
	r.Header.Set("Authorization", "Bearer "+user.Token)
	res, err = http.DefaultClient.Do(r)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusCreated, res.StatusCode)
	r, _ = http.NewRequest("GET", base+"/v1/storage?min_position="+res.Header.Get("Epoch-Position"), nil)
	r.Header.Set("Authorization", "Bearer "+user.Token)
	res, err = http.DefaultClient.Do(r)
	require.NoError(t, err)
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	require.JSONEq(t, `{"file_count":1,"bytes":42,"position":`+res.Header.Get("Epoch-Position")+`}`, string(body))

	// The status places storage inline, billing in the worker.
	r, _ = http.NewRequest("GET", base+"/v1/admin/status", nil)
	r.Header.Set("Authorization", "Bearer admin")
	res, err = http.DefaultClient.Do(r)
	require.NoError(t, err)
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	var status struct {
		Subscribers []struct{ Name, Placement string }
	}
	require.NoError(t, json.Unmarshal(body, &status))
	var want []struct{ Name, Placement string }
	for _, name := range subscribers.Movable().Names() {
		placement := "remote"
		if slices.Contains(cfg.InlineSubscribers, name) {
			placement = "inline"
		}
		want = append(want, struct{ Name, Placement string }{name, placement})
	}
	require.Equal(t, want, status.Subscribers)

	cancel()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	_, err = http.Get(base + "/healthz")
	require.Error(t, err, "nothing listens after shutdown")
}

// An unknown inline subscriber is a configuration error, not a silent
// remote one.
func TestRunUnknownInlineSubscriber(t *testing.T) {
	t.Parallel()
	_, dbURL := testdb.New(t)
	var cfg config
	require.NoError(t, envconfig.Process(process.EnvPrefix, &cfg))
	cfg.DatabaseURL = dbURL
	cfg.HTTPAddr = freeAddr(t)
	cfg.InlineSubscribers = []string{"storgae"}
	err := run(t.Context(), cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	require.ErrorContains(t, err, "storgae")
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestNegativeSettingsAreRefused(t *testing.T) {
	for name, bad := range map[string]string{"EPOCH_TOKEN_CACHE_TTL": "-1s", "EPOCH_OUTBOX_MAX_BACKLOG": "-1"} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, bad)
			var cfg config
			require.NoError(t, envconfig.Process(process.EnvPrefix, &cfg))
			require.ErrorContains(t, checkConfig(&cfg), name)
			t.Setenv(name, "0") // off, not refused
			require.NoError(t, envconfig.Process(process.EnvPrefix, &cfg))
			require.NoError(t, checkConfig(&cfg))
		})
	}
}

// The migrations' transactions, which goose begins and commits, carry no
// wake-up of their own: the api sends the relays one once it applied
// them, and none when there was nothing to apply.
func TestMigrationsWakeTheRelaysOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.Empty(t)
	listener, err := pool.Acquire(ctx)
	require.NoError(t, err)
	t.Cleanup(listener.Release)
	_, err = listener.Exec(ctx, "LISTEN "+outbox.NotifyChannel)
	require.NoError(t, err)
	notified := func(within time.Duration) bool {
		waitCtx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		_, err := listener.Conn().WaitForNotification(waitCtx)
		if pgconn.Timeout(err) {
			return false
		}
		require.NoError(t, err)
		return true
	}
	logger := slog.New(slog.DiscardHandler)
	require.NoError(t, migrateWhenReady(ctx, pool, logger, time.Minute))
	require.True(t, notified(5*time.Second), "no NOTIFY after the migrations committed")
	pending, err := migrate.Pending(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, pending)
	require.NoError(t, migrateWhenReady(ctx, pool, logger, time.Minute))
	require.False(t, notified(300*time.Millisecond), "a NOTIFY with no migration applied")
}
