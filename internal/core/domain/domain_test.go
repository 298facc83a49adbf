package domain_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
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

// The rules' errors are the messages the API answers with, word for word.
func TestRuleMessages(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("z", 300)
	size := func(s string) error { _, err := domain.ParseSize(s); return err }
	id := func(s string) error { _, err := domain.ParseID("id", s); return err }
	fileIDs := func(ids ...string) error { _, err := domain.ParseFileIDs(ids); return err }
	contentType := func(s string) error { _, err := domain.ContentType(s); return err }
	a, b := uuid.NewString(), uuid.NewString()
	for _, c := range []struct {
		err  error
		want string
	}{
		{domain.CheckName("name", ""), "name is required and must not be empty"},
		{domain.CheckName("name", long), "name must be at most 255 characters, not 300"},
		{domain.CheckName("name", "a\x00b"), "name must not contain control characters (found U+0000)"},
		{domain.CheckName("name", "a\u0085"), "name must not contain control characters (found U+0085)"},
		{contentType(strings.Repeat("é", 256)), "content_type must be at most 255 characters, not 256"},
		{contentType("text/\n"), "content_type must not contain control characters (found U+000A)"},
		{domain.CheckSize(-1), "size_bytes must not be negative"},
		{size("-1"), "size_bytes must not be negative"},
		{size("-99999999999999999999"), "size_bytes must not be negative"},
		{size("1.0"), "size_bytes must be an integer, not 1.0"},
		{size(`"` + long + `"`), `size_bytes must be an integer, not "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz…`},
		{size("9223372036854775808"), "size_bytes must be less than 2^63"},
		{id("123"), `id must be a UUID, not "123"`},
		{id("{" + a + "}"), fmt.Sprintf("id must be a UUID, not %q", "{"+a+"}")},
		{id("urn:uuid:" + a), fmt.Sprintf("id must be a UUID, not %q", ("urn:uuid:" + a)[:40]+"…")},
		{fileIDs(a, "x"), `file_ids[1] must be a UUID, not "x"`},
		{fileIDs(a, b, a, "x"), "file_ids[2] repeats file_ids[0]"},
		{fileIDs(a, strings.ToUpper(a)), "file_ids[1] repeats file_ids[0]"},
		{domain.CheckDeadLetterID("event_id", ""), "event_id must be 1 to 255 characters"},
		{domain.CheckDeadLetterID("event_id", long), "event_id must be 1 to 255 characters"},
		{domain.CheckDeadLetterID("event_id", "a\x00"), "event_id holds a NUL character"},
		{domain.CheckDeadLetterID("event_id", "\xff"), "event_id is not valid UTF-8"},
		{domain.CheckDeadLetterIDs([]string{"a", "b", "a", ""}), "event_ids[2] repeats event_ids[0]"},
		{domain.CheckDeadLetterIDs([]string{"a", ""}), "event_ids[1] must be 1 to 255 characters"},
	} {
		var rule *domain.RuleError
		require.ErrorAs(t, c.err, &rule, c.want)
		require.Equal(t, c.want, c.err.Error())
	}

	for s, want := range map[string]int64{"0": 0, "-0": 0, "42": 42, "9223372036854775807": 1<<63 - 1} {
		n, err := domain.ParseSize(s)
		require.NoError(t, err, s)
		require.Equal(t, want, n, s)
	}
	ids, err := domain.ParseFileIDs([]string{a, b})
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{uuid.MustParse(a), uuid.MustParse(b)}, ids)
	require.NoError(t, domain.CheckDeadLetterIDs([]string{"a", "sha256:00", strings.Repeat("é", 255)}))
}
