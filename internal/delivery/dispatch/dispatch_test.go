package dispatch_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/commandside/projection"
	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// recorder is a movable subscriber that counts what reaches it, or fails.
type recorder struct {
	name string
	fail error
	got  []eventstore.Event
}

func (r *recorder) Name() string         { return r.name }
func (r *recorder) EventTypes() []string { return []string{domain.FileUploaded} }
func (r *recorder) Handle(_ context.Context, _ *database.Tx, events []eventstore.Event) error {
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, events...)
	return nil
}

func count(t *testing.T, db interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, table string) int {
	var n int
	require.NoError(t, db.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

func TestUnknownInlineSubscriberIsAnError(t *testing.T) {
	t.Parallel()
	_, err := dispatch.New(nil, []dispatch.Subscriber{&recorder{name: "storage"}}, []string{"storgae"})
	require.ErrorContains(t, err, "storgae")
}

// An inline subscriber that fails rolls the whole command back: no event,
// no projection row, no outbox row.
func TestInlineFailureRollsTheCommandBack(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	broken := &recorder{name: "storage", fail: errors.New("disk on fire")}
	d, err := dispatch.New([]dispatch.Subscriber{projection.Subscriber{}}, []dispatch.Subscriber{broken}, []string{"storage"})
	require.NoError(t, err)
	svc := command.NewService(pool, d)

	err = svc.Run(ctx, func(tx *database.Tx) error {
		_, err := svc.UploadFile(ctx, tx, uuid.New(), command.UploadFile{Name: "a", SizeBytes: 1})
		return err
	})
	require.ErrorContains(t, err, "disk on fire")
	for _, table := range []string{"events", "outbox", "files", "inbox"} {
		require.Zero(t, count(t, pool, table), table)
	}
}

// A movable subscriber placed inline sees each event once, records it in
// the inbox, and a second delivery of the same events (the remote copy) is a
// no-op. Placed remote, it is not called inline, yet the outbox row is there.
func TestInlineDeliveryIsDeduplicated(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	inline := &recorder{name: "storage"}
	remote := &recorder{name: "billing"}
	d, err := dispatch.New([]dispatch.Subscriber{projection.Subscriber{}}, []dispatch.Subscriber{inline, remote}, []string{"storage"})
	require.NoError(t, err)
	require.Equal(t, []string{"storage"}, d.Inline())
	svc := command.NewService(pool, d)

	require.NoError(t, svc.Run(ctx, func(tx *database.Tx) error {
		_, err := svc.UploadFile(ctx, tx, uuid.New(), command.UploadFile{Name: "a", SizeBytes: 1})
		return err
	}))
	require.Len(t, inline.got, 1)
	require.Empty(t, remote.got)
	require.Equal(t, 1, count(t, pool, "outbox"))

	// The remote copy of the same event, delivered again: nothing new.
	var fresh int
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) (err error) {
		fresh, err = dispatch.DeliverCount(ctx, tx, inline, inline.got)
		return err
	}))
	require.Zero(t, fresh)
	require.Len(t, inline.got, 1)

	// The other subscriber, remote, takes it once, and twice in one batch
	// still counts once.
	events := []eventstore.Event{inline.got[0], inline.got[0]}
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) (err error) {
		fresh, err = dispatch.DeliverCount(ctx, tx, remote, events)
		return err
	}))
	require.Equal(t, 1, fresh)
	require.Len(t, remote.got, 1)
}
