package filefacts_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/subscribers/filefacts"
)

func event(t *testing.T, file uuid.UUID, version int32, typ string, data any, at time.Time, position int64) eventstore.Event {
	t.Helper()
	e, err := eventstore.New(domain.StreamFile, file, version, typ, data, at)
	require.NoError(t, err)
	e.Position = position
	return e
}

func TestFoldIsOrderAndDuplicateProof(t *testing.T) {
	t.Parallel()
	owner, a, b := uuid.New(), uuid.New(), uuid.New()
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	upA := event(t, a, 1, domain.FileUploaded, domain.FileUploadedData{OwnerID: owner, Name: "a", SizeBytes: 10}, t0, 1)
	delA := event(t, a, 2, domain.FileDeleted, domain.FileDeletedData{OwnerID: owner}, t0.Add(time.Hour), 5)
	upB := event(t, b, 1, domain.FileUploaded, domain.FileUploadedData{OwnerID: owner, Name: "b", SizeBytes: 7}, t0.Add(time.Minute), 3)

	ids1, facts1, err := filefacts.Fold([]eventstore.Event{upA, upB, delA})
	require.NoError(t, err)
	ids2, facts2, err := filefacts.Fold([]eventstore.Event{delA, upB, delA, upA, upB})
	require.NoError(t, err)
	require.Equal(t, ids1, ids2)
	require.Equal(t, facts1, facts2)

	byID := map[uuid.UUID]filefacts.Facts{}
	for i, id := range ids1 {
		byID[id] = facts1[i]
	}
	require.Equal(t, filefacts.Facts{Owner: owner, HasUpload: true, Size: 10, UploadedAt: t0,
		HasDelete: true, DeletedAt: t0.Add(time.Hour), Position: 5}, byID[a])
	require.Equal(t, filefacts.Facts{Owner: owner, HasUpload: true, Size: 7, UploadedAt: t0.Add(time.Minute), Position: 3}, byID[b])
}

func TestFoldRejectsWhatCannotBeApplied(t *testing.T) {
	t.Parallel()
	file, at := uuid.New(), time.Now()
	for name, e := range map[string]eventstore.Event{
		"negative size": event(t, file, 1, domain.FileUploaded, domain.FileUploadedData{OwnerID: uuid.New(), SizeBytes: -1}, at, 1),
		"no owner":      event(t, file, 2, domain.FileDeleted, domain.FileDeletedData{}, at, 2),
		"other type":    event(t, file, 1, domain.JobCreated, domain.JobCreatedData{OwnerID: uuid.New(), Name: "j"}, at, 3),
		"bad data":      {ID: uuid.New(), StreamID: file, Type: domain.FileUploaded, Data: []byte(`{"owner_id":1}`)},
	} {
		_, _, err := filefacts.Fold([]eventstore.Event{e})
		require.ErrorIs(t, err, filefacts.ErrMalformedEvent, name)
	}
}
