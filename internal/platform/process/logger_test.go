package process

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoggerWritesDurationsAsText(t *testing.T) {
	var out bytes.Buffer
	NewLogger(&out).Info("waiting", "backoff", 5*time.Second, "took", 150*time.Millisecond,
		slog.Group("relay", "poll", 200*time.Millisecond), "count", 3)
	var line map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &line), out.String())
	require.Equal(t, "5s", line["backoff"])
	require.Equal(t, "150ms", line["took"])
	require.Equal(t, map[string]any{"poll": "200ms"}, line["relay"])
	require.Equal(t, float64(3), line["count"], "other values stay as they are")
}
