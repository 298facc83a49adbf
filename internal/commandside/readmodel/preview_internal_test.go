package readmodel

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// WriteJSON writes what json.Marshal writes for the same preview, escapes
// and all, in pieces.
func TestPreviewWriteJSONIsMarshal(t *testing.T) {
	row := &dbsqlc.JobGetRow{ID: uuid.New(), Name: `a "job" <&> é 😀 \ ` + "\u2028", Version: 7,
		Position: 42, FileCount: 3, TotalBytes: "18446744073709551616"}
	var files []*dbsqlc.JobFileListRow
	for _, name := range []string{"plain", `<script>"x"</script>`, string(bytes.Repeat([]byte("n"), 255))} {
		files = append(files, &dbsqlc.JobFileListRow{FileID: uuid.New(), Name: name, SizeBytes: int64(len(name))})
	}
	for _, fs := range [][]*dbsqlc.JobFileListRow{files, {}} {
		want, err := json.Marshal(previewFrom(row, fs))
		require.NoError(t, err)
		var got bytes.Buffer
		require.NoError(t, (&Preview{row: row, files: fs}).WriteJSON(&got))
		require.Equal(t, string(want), got.String())
	}
	// Many files are written in more than one piece.
	many := make([]*dbsqlc.JobFileListRow, 2000)
	for i := range many {
		many[i] = files[i%len(files)]
	}
	want, err := json.Marshal(previewFrom(row, many))
	require.NoError(t, err)
	w := &countingWriter{}
	require.NoError(t, (&Preview{row: row, files: many}).WriteJSON(w))
	require.Equal(t, string(want), w.buf.String())
	require.Greater(t, w.writes, 1)
}

type countingWriter struct {
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.buf.Write(p)
}
