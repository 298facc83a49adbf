package subscribertest_test

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/subscribertest"
)

// uploads is the smallest movable subscriber worth the name: per owner,
// how many files were ever uploaded and their bytes. Sums commute, and the
// inbox keeps a duplicate from counting twice, so it conforms without
// knowing which path delivered what.
type uploads struct{}

func (uploads) Name() string         { return "uploads" }
func (uploads) EventTypes() []string { return []string{domain.FileUploaded} }
func (uploads) Tables() []string     { return []string{"subscribertest_uploads"} }

func (uploads) Handle(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	return upsertUploads(ctx, tx, events, `
    uploads = subscribertest_uploads.uploads + excluded.uploads,
    bytes   = subscribertest_uploads.bytes + excluded.bytes`)
}

// upsertUploads adds a batch's uploads to each owner's row, set as set
// says when the row is there.
func upsertUploads(ctx context.Context, tx *database.Tx, events []eventstore.Event, set string) error {
	owners, sizes := make([]uuid.UUID, len(events)), make([]int64, len(events))
	for i, e := range events {
		d, err := eventstore.Decode[domain.FileUploadedData](e)
		if err != nil {
			return err
		}
		owners[i], sizes[i] = d.OwnerID, d.SizeBytes
	}
	// One row per owner (ON CONFLICT cannot touch a row twice), in owner
	// order so concurrent batches lock rows in the same order.
	_, err := tx.Exec(ctx, `
INSERT INTO subscribertest_uploads (owner_id, uploads, bytes)
SELECT owner_id, count(*), sum(size) FROM unnest($1::uuid[], $2::bigint[]) AS u(owner_id, size)
GROUP BY owner_id ORDER BY owner_id
ON CONFLICT (owner_id) DO UPDATE SET`+set, owners, sizes)
	return err
}

// lastBatch is uploads gone wrong: a row keeps the last batch it was
// handed, so its rows depend on how deliveries were ordered and batched.
type lastBatch struct{ uploads }

func (lastBatch) Handle(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	return upsertUploads(ctx, tx, events, `
    uploads = excluded.uploads,
    bytes   = excluded.bytes`)
}

func createUploads(ctx context.Context, db database.DBTX) error {
	_, err := db.Exec(ctx, `CREATE TABLE subscribertest_uploads (
    owner_id uuid    PRIMARY KEY,
    uploads  bigint  NOT NULL,
    bytes    numeric NOT NULL
)`)
	return err
}

// The suite fails a subscriber whose rows depend on the order and batching
// of its deliveries, on both paths. It runs in a test process of its own
// (this binary, asked to run the suite on lastBatch), with a fixed seed so
// the histories that show it are the same each time.
func TestSuiteFailsAnOrderDependentSubscriber(t *testing.T) {
	t.Parallel()
	if os.Getenv("EPOCH_SUBSCRIBERTEST_BROKEN") == "1" {
		subscribertest.Run(t, subscribertest.Features{
			New:     func() dispatch.Subscriber { return lastBatch{} },
			Prepare: createUploads,
		})
		return
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.count=1", "-test.v",
		"-test.run=^TestSuiteFailsAnOrderDependentSubscriber$/AnyOrder$")
	cmd.Env = append(os.Environ(), "EPOCH_SUBSCRIBERTEST_BROKEN=1", "EPOCH_SUBSCRIBERTEST_SEED=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the suite passed a subscriber that keeps the last batch:\n%s", out)
	for _, test := range []string{"InlineAnyOrder", "RemoteAnyOrder"} {
		require.Regexp(t, `--- FAIL: TestSuiteFailsAnOrderDependentSubscriber/`+test, string(out))
	}
	require.Contains(t, string(out), "the subscriber's rows are not the reference's")
}

// A new movable subscriber joins the suite with one call.
func TestUploadsConforms(t *testing.T) {
	t.Parallel()
	subscribertest.Run(t, subscribertest.Features{
		New:     func() dispatch.Subscriber { return uploads{} },
		Prepare: createUploads,
	})
}
