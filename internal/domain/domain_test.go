package domain_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/domain"
)

func TestCheckName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{strings.Repeat("é", 255), true},
		{"", false},
		{strings.Repeat("x", 256), false},
		{"nul\x00inside", false},
		{"tab\tinside", false},
		{"del\x7f", false},
		{"c1\u0085", false},
		{"bad utf8 \xff", false},
		{"日本語 ok", true},
	} {
		err := domain.CheckName("name", tc.name)
		require.Equal(t, tc.ok, err == nil, "%q: %v", tc.name, err)
		if err != nil {
			var rule *domain.RuleError
			require.ErrorAs(t, err, &rule)
			require.Equal(t, "name", rule.Field)
		}
	}
}

func TestContentTypeDefaultsAndLimits(t *testing.T) {
	t.Parallel()
	ct, err := domain.ContentType("")
	require.NoError(t, err)
	require.Equal(t, domain.DefaultContentType, ct)
	ct, err = domain.ContentType("image/png")
	require.NoError(t, err)
	require.Equal(t, "image/png", ct)
	_, err = domain.ContentType(strings.Repeat("x", 256))
	require.Error(t, err)
	_, err = domain.ContentType("text/plain\n")
	require.Error(t, err)
}

func TestNewFileRejectsNegativeSize(t *testing.T) {
	t.Parallel()
	_, err := domain.NewFile(uuid.New(), uuid.New(), "a", -1, "")
	require.Error(t, err)
	changes, err := domain.NewFile(uuid.New(), uuid.New(), "a", 0, "")
	require.NoError(t, err)
	require.Equal(t, domain.DefaultContentType, changes[0].Data.(domain.FileUploadedData).ContentType)
}

func TestLinkAndUnlinkAreNoOpsWhenAlreadyThere(t *testing.T) {
	t.Parallel()
	job, file := uuid.New(), uuid.New()
	require.Empty(t, domain.Link(job, file, true))
	require.Len(t, domain.Link(job, file, false), 1)
	require.Empty(t, domain.Unlink(job, file, false))
	require.Equal(t, domain.JobFileUnlinked, domain.Unlink(job, file, true)[0].Type)
}

func TestSetFilesUnlinksThenLinksInOrder(t *testing.T) {
	t.Parallel()
	job := uuid.New()
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	changes, err := domain.SetFiles(job, []uuid.UUID{a, b, c}, []uuid.UUID{d, b, a})
	require.NoError(t, err)
	require.Equal(t, []domain.Change{
		{StreamType: domain.StreamJob, StreamID: job, Type: domain.JobFileUnlinked, Data: domain.JobFileUnlinkedData{FileID: c}},
		{StreamType: domain.StreamJob, StreamID: job, Type: domain.JobFileLinked, Data: domain.JobFileLinkedData{FileID: d}},
	}, changes)

	none, err := domain.SetFiles(job, []uuid.UUID{a, b}, []uuid.UUID{b, a})
	require.NoError(t, err)
	require.Empty(t, none, "the same set in another order changes nothing")

	_, err = domain.SetFiles(job, nil, []uuid.UUID{a, a})
	require.Error(t, err)
}

func TestDeleteFileUnlinksFromEveryJobFirst(t *testing.T) {
	t.Parallel()
	file, owner, j1, j2 := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	changes := domain.DeleteFile(file, owner, []uuid.UUID{j1, j2})
	require.Len(t, changes, 3)
	require.Equal(t, j1, changes[0].StreamID)
	require.Equal(t, domain.JobFileUnlinked, changes[1].Type)
	require.Equal(t, domain.Change{StreamType: domain.StreamFile, StreamID: file, Type: domain.FileDeleted,
		Data: domain.FileDeletedData{OwnerID: owner}}, changes[2])
}
