// Package projection keeps the read models the API answers from (files,
// jobs, job_files) in step with the event store. It runs inline, in the
// command's transaction, so a command's answer and every read after it see
// its events. Rebuild replays the whole store through the same code.
package projection

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// Name is the projection subscriber's name.
const Name = "projections"

// Subscriber applies file and job events to files, jobs and job_files.
// One subscriber handles both streams because the order between them
// matters: a link copies the file's name and size from its files row.
type Subscriber struct{}

// Name implements dispatch.Subscriber.
func (Subscriber) Name() string { return Name }

// EventTypes implements dispatch.Subscriber.
func (Subscriber) EventTypes() []string {
	return slices.Concat(domain.FileEventTypes, domain.JobEventTypes)
}

// Tables implements dispatch.Rebuildable.
func (Subscriber) Tables() []string { return []string{"files", "jobs", "job_files"} }

// Handle applies events in order, one statement per run of consecutive
// events of the same type: a command's 1,000 links are one statement. The
// statements are batch statements whose results nobody reads: they wait
// in the transaction (database.Tx) to go to Postgres with the command's
// next statement, a read of what they wrote, or its COMMIT.
func (Subscriber) Handle(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	for start := 0; start < len(events); {
		end := start + 1
		for end < len(events) && events[end].Type == events[start].Type {
			end++
		}
		if err := applyRun(ctx, tx, events[start:end]); err != nil {
			return fmt.Errorf("project %s: %w", events[start].Type, err)
		}
		start = end
	}
	return nil
}

func applyRun(ctx context.Context, tx *database.Tx, run []eventstore.Event) error {
	q := dbsqlc.New()
	switch run[0].Type {
	case domain.FileUploaded:
		p := &dbsqlc.ProjectionFilesUploadedParams{}
		for _, e := range run {
			d, err := eventstore.Decode[domain.FileUploadedData](e)
			if err != nil {
				return err
			}
			p.Ids = append(p.Ids, e.StreamID)
			p.OwnerIds = append(p.OwnerIds, d.OwnerID)
			p.Names = append(p.Names, d.Name)
			p.Sizes = append(p.Sizes, d.SizeBytes)
			p.ContentTypes = append(p.ContentTypes, d.ContentType)
			p.OccurredAts = append(p.OccurredAts, e.OccurredAt)
			p.Positions = append(p.Positions, e.Position)
			p.Versions = append(p.Versions, e.Version)
		}
		q.ProjectionFilesUploaded(ctx, tx, []*dbsqlc.ProjectionFilesUploadedParams{p})
		return nil
	case domain.FileDeleted:
		ids := streamIDs(run)
		q.ProjectionFilesDeleted(ctx, tx, [][]uuid.UUID{ids})
		return nil
	case domain.JobCreated:
		p := &dbsqlc.ProjectionJobsCreatedParams{}
		for _, e := range run {
			d, err := eventstore.Decode[domain.JobCreatedData](e)
			if err != nil {
				return err
			}
			p.Ids = append(p.Ids, e.StreamID)
			p.OwnerIds = append(p.OwnerIds, d.OwnerID)
			p.Names = append(p.Names, d.Name)
			p.OccurredAts = append(p.OccurredAts, e.OccurredAt)
			p.Positions = append(p.Positions, e.Position)
			p.Versions = append(p.Versions, e.Version)
		}
		q.ProjectionJobsCreated(ctx, tx, []*dbsqlc.ProjectionJobsCreatedParams{p})
		return nil
	case domain.JobDeleted:
		ids := streamIDs(run)
		q.ProjectionJobsDeleted(ctx, tx, [][]uuid.UUID{ids})
		return nil
	case domain.JobFileLinked, domain.JobFileUnlinked:
		jobs, files, versions, positions, err := linkColumns(run)
		if err != nil {
			return err
		}
		if run[0].Type == domain.JobFileLinked {
			p := &dbsqlc.ProjectionJobFilesLinkedParams{JobIds: jobs, FileIds: files, Versions: versions, Positions: positions}
			q.ProjectionJobFilesLinked(ctx, tx, []*dbsqlc.ProjectionJobFilesLinkedParams{p})
			return nil
		}
		p := &dbsqlc.ProjectionJobFilesUnlinkedParams{JobIds: jobs, FileIds: files, Versions: versions, Positions: positions}
		q.ProjectionJobFilesUnlinked(ctx, tx, []*dbsqlc.ProjectionJobFilesUnlinkedParams{p})
		return nil
	default:
		return fmt.Errorf("unknown event type %q", run[0].Type)
	}
}

// linkColumns reads job.file_linked and job.file_unlinked events, whose data
// is the same shape, into unnest columns.
func linkColumns(run []eventstore.Event) (jobs, files []uuid.UUID, versions []int32, positions []int64, err error) {
	jobs, files = make([]uuid.UUID, len(run)), make([]uuid.UUID, len(run))
	versions, positions = make([]int32, len(run)), make([]int64, len(run))
	for i, e := range run {
		var file uuid.UUID
		if e.Type == domain.JobFileLinked {
			d, err := eventstore.Decode[domain.JobFileLinkedData](e)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			file = d.FileID
		} else {
			d, err := eventstore.Decode[domain.JobFileUnlinkedData](e)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			file = d.FileID
		}
		jobs[i], files[i], versions[i], positions[i] = e.StreamID, file, e.Version, e.Position
	}
	return jobs, files, versions, positions, nil
}

func streamIDs(run []eventstore.Event) []uuid.UUID {
	ids := make([]uuid.UUID, len(run))
	for i, e := range run {
		ids[i] = e.StreamID
	}
	return ids
}

// replayBatch is how many events Rebuild reads and applies at a time.
const replayBatch = 5000

// Rebuild empties the projection tables and replays every event into them,
// in the caller's transaction. The result equals the live tables: that is
// the test that the event store is the truth.
func Rebuild(ctx context.Context, tx *database.Tx) error {
	if err := dbsqlc.New().ProjectionTruncate(ctx, tx); err != nil {
		return fmt.Errorf("truncate projections: %w", err)
	}
	var after int64
	for {
		events, err := eventstore.After(ctx, tx, after, replayBatch)
		if err != nil {
			return err
		}
		if len(events) == 0 {
			return nil
		}
		if err := (Subscriber{}).Handle(ctx, tx, events); err != nil {
			return err
		}
		after = events[len(events)-1].Position
	}
}
