package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// A client generated from the api's own GET /v1/openapi.json by outside
// tools (openapi-typescript's types for openapi-fetch) type-checks against
// the README's whole session, written in TypeScript, and runs it against a
// real api and worker: the document describes the API a client meets.
func TestGeneratedClientRunsTheREADMESession(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"node", "npm"} {
		_, err := exec.LookPath(tool)
		require.NoError(t, err, "%s (Debian's nodejs and npm; scripts/test installs them)", tool)
	}
	dir := t.TempDir()
	for _, name := range []string{"package.json", "tsconfig.json", "session.ts"} {
		b, err := os.ReadFile(filepath.Join("testdata", "tsclient", name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	ctx := e2ekit.CtxFor(t, 5*time.Minute)
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s %v:\n%s", name, args, out)
		return string(out)
	}
	run(nil, "npm", "install", "--no-audit", "--no-fund", "--loglevel=error")

	s := newSystem(t, "tsclient", "")
	resp, err := s.http.Get("http://" + s.api.Addr + "/v1/openapi.json")
	require.NoError(t, err)
	doc, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", doc)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "openapi.json"), doc, 0o644))

	bin := filepath.Join(dir, "node_modules", ".bin")
	run(nil, filepath.Join(bin, "openapi-typescript"), "openapi.json", "-o", "schema.d.ts")
	run(nil, filepath.Join(bin, "tsc"), "-p", ".")
	out := run([]string{"EPOCH_URL=http://" + s.api.Addr, "EPOCH_ADMIN_TOKEN=" + adminToken}, "node", filepath.Join("dist", "session.js"))

	var got struct {
		File             string   `json:"file"`
		PreviewFiles     []string `json:"preview_files"`
		Position         int64    `json:"position"`
		StorageFileCount int      `json:"storage_file_count"`
		UsageByteSeconds string   `json:"usage_byte_seconds"`
		DayWindows       int      `json:"day_windows"`
		Statements       int      `json:"statements"`
		PriceVersion     int      `json:"price_version"`
		Subscribers      []string `json:"subscribers"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), "%s", out)
	require.Equal(t, []string{got.File}, got.PreviewFiles, "the preview holds the linked file")
	require.Positive(t, got.Position, "Epoch-Position on the link's answer")
	require.Equal(t, 1, got.StorageFileCount, "min_position waited for the upload")
	require.NotEmpty(t, got.UsageByteSeconds)
	// A UTC month in Berlin's days: its days, and an hour of the next
	// month's first, each end clipped.
	require.GreaterOrEqual(t, got.DayWindows, 29, "a month of days")
	require.LessOrEqual(t, got.DayWindows, 32)
	require.Equal(t, 1, got.Statements, "this month's statement, open")
	require.Positive(t, got.PriceVersion)
	require.True(t, slices.Contains(got.Subscribers, "storage") && slices.Contains(got.Subscribers, "billing"), "%v", got.Subscribers)
}
