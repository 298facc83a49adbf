package e2e_test

import (
	"bufio"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// apiMetric is the value of an unlabelled metric of an api process.
func apiMetric(t *testing.T, client *http.Client, p *e2ekit.Proc, name string) (float64, bool) {
	t.Helper()
	resp, err := client.Get("http://" + p.Addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			require.NoError(t, err)
			return f, true
		}
	}
	return 0, false
}

// Two api processes: a token rotated on one answers 401 on the other within
// a second, and a min_position read on the second answers as soon as the
// worker's subscriber committed, woken by its NOTIFY rather than a poll.
func TestTwoAPIProcessesEndToEnd(t *testing.T) {
	t.Parallel()
	s := newSystem(t, "twoapis", "")
	second := bin.Start(t, "api", "twoapis-api2", s.apiEnv)
	second.WaitReady(t, 30*time.Second)
	for _, p := range []*e2ekit.Proc{s.api, second} {
		e2ekit.Eventually(t, 10*time.Second, p.Name+" hears token rotations", func() (bool, string) {
			v, ok := apiMetric(t, s.http, p, "epoch_api_token_cache_live")
			return ok && v == 1, fmt.Sprintf("epoch_api_token_cache_live %v (found %v)", v, ok)
		})
	}

	created := s.call(t, http.StatusCreated, "POST", "/v1/users", adminToken, map[string]string{"name": "rot"}).JSON(t)
	id, old := created["id"].(string), created["token"].(string)
	require.Equal(t, http.StatusOK, s.get(t, second, "/v1/files", old)) // now cached there

	rotated := s.call(t, http.StatusOK, "POST", "/v1/admin/users/"+id+"/token", adminToken, nil).JSON(t)
	fresh := rotated["token"].(string)
	at := time.Now()
	for s.get(t, second, "/v1/files", old) != http.StatusUnauthorized {
		require.Less(t, time.Since(at), time.Second, "the old token still works on the second api process")
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("old token refused by the second api process %s after the rotation answered", time.Since(at))
	require.Equal(t, http.StatusOK, s.get(t, second, "/v1/files", fresh))

	var took []time.Duration
	for i := range 10 {
		pos := s.call(t, http.StatusCreated, "POST", "/v1/files", fresh, map[string]any{"name": fmt.Sprint("f", i), "size_bytes": 10}).Position(t)
		start := time.Now()
		require.Equal(t, http.StatusOK, s.get(t, second, fmt.Sprintf("/v1/storage?min_position=%d", pos), fresh))
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	t.Logf("min_position reads on the second api process: %v", took)
	// The watcher's fallback looks once a second; a median well below it
	// shows the subscriber's NOTIFY woke the waits.
	require.Less(t, took[len(took)/2], 500*time.Millisecond)
}
