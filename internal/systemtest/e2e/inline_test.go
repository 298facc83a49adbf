package e2e_test

import (
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// The same command sequence, sent over HTTP to two systems
// (two databases, two vhosts) that differ only in where storage and billing
// run — remote in the worker, or inline in the api
// (EPOCH_INLINE_SUBSCRIBERS=storage,billing) — gives the same positions and
// the same GET /v1/storage and GET /v1/usage answers. The two systems stamp
// their events with their own clocks, so usage is compared over windows the
// event times do not enter: one after every event that ends before the
// request ("now" does not enter either) and one before any event. Over the
// whole history, each system's usage is checked against a brute-force sum
// of its own events. In the inline system, the worker's remote copies of
// the file events must all be inbox no-ops.
func TestInlineAndRemoteSubscribersAgree(t *testing.T) {
	t.Parallel()
	ctx := e2ekit.CtxFor(t, 2*time.Minute)
	startTest := time.Now()
	remote := newSystem(t, "remote", "")
	inline := newSystem(t, "inline", "storage,billing")

	const users = 4
	script := makeScript(uint64(time.Now().UnixNano()), users, 200)
	before := time.Now()
	remoteTokens, remotePositions := remote.run(t, users, script)
	inlineTokens, inlinePositions := inline.run(t, users, script)
	require.Equal(t, remotePositions, inlinePositions, "the same commands got other positions")
	last := slices.Max(remotePositions)

	// A window after every event of both systems, over by the time of the
	// requests: usage there is what each file still stored, times 1.5 s.
	after := time.Now().UTC()
	end := after.Add(1500 * time.Millisecond)
	for time.Now().Before(end.Add(10 * time.Millisecond)) {
		time.Sleep(time.Until(end.Add(10 * time.Millisecond)))
	}
	windows := [][2]time.Time{
		{after, end},
		{before.Add(-time.Hour), before.Add(-time.Minute)},
	}
	fileEvents := 0
	for u := range users {
		r := remote.call(t, http.StatusOK, "GET", fmt.Sprintf("/v1/storage?min_position=%d", last), remoteTokens[u], nil)
		i := inline.call(t, http.StatusOK, "GET", fmt.Sprintf("/v1/storage?min_position=%d", last), inlineTokens[u], nil)
		require.Equal(t, r.JSON(t), i.JSON(t), "storage of user %d: remote %s, inline %s", u, r.Body, i.Body)
		for w, win := range windows {
			path := e2ekit.UsagePath(win[0], win[1], last)
			r := remote.call(t, http.StatusOK, "GET", path, remoteTokens[u], nil)
			i := inline.call(t, http.StatusOK, "GET", path, inlineTokens[u], nil)
			// A cost is the month's amount up to to less its amount up to
			// from, each written to 18 decimals where it does not end: the
			// systems' months began with other histories, so the two may
			// differ in the last decimal, each within 1e-18 of exact.
			rj, ij := r.JSON(t), i.JSON(t)
			for _, got := range []map[string]any{rj, ij} {
				bs, ok := new(big.Rat).SetString(got["byte_seconds"].(string))
				require.True(t, ok)
				exact := bs.Mul(bs, big.NewRat(3, 100000*3_600_000_000_000))
				cost, ok := new(big.Rat).SetString(got["cost"].(string))
				require.True(t, ok)
				require.True(t, new(big.Rat).Abs(cost.Sub(cost, exact)).Cmp(big.NewRat(1, 1_000_000_000_000_000_000)) <= 0,
					"cost %s of byte_seconds %s", got["cost"], got["byte_seconds"])
				delete(got, "cost")
			}
			require.Equal(t, rj, ij, "usage of user %d, window %d: remote %s, inline %s", u, w, r.Body, i.Body)
		}
	}

	// Over the whole history each is exact against its own events.
	for _, sys := range []struct {
		s      *system
		tokens []string
	}{{remote, remoteTokens}, {inline, inlineTokens}} {
		events := e2ekit.LoadEvents(t, ctx, sys.s.pool)
		fileEvents = e2ekit.CountFileEvents(events)
		tr := e2ekit.BruteForce(t, events)
		for u, tok := range sys.tokens {
			owner := ownerOf(t, sys.s, tok)
			got := sys.s.call(t, http.StatusOK, "GET", e2ekit.UsagePath(before.Add(-time.Hour), end, last), tok, nil).JSON(t)
			want := tr.ByteSeconds(owner, before.Add(-time.Hour), end, end)
			require.Equal(t, billing.FormatDecimal(want, 6), got["byte_seconds"], "%s usage of user %d", sys.s.name, u)
			require.Equal(t, fmt.Sprint(tr.Position[owner]), fmt.Sprint(got["position"]), "%s usage position of user %d", sys.s.name, u)
		}
	}

	// The inline system's worker gets every file event too, and applies
	// none of them again.
	e2ekit.Eventually(t, 30*time.Second, "inline system's worker consumed every file event as a duplicate", func() (bool, string) {
		st := inline.workerMetric(t, "epoch_consumer_duplicates_total", `subscriber="storage"`)
		bi := inline.workerMetric(t, "epoch_consumer_duplicates_total", `subscriber="billing"`)
		return int(st) == fileEvents && int(bi) == fileEvents, fmt.Sprintf("duplicates storage %v billing %v of %d", st, bi, fileEvents)
	})
	require.Zero(t, inline.workerMetric(t, "epoch_consumer_processed_total", ""), "the inline system's worker applied an event again")
	for u := range users {
		r := remote.call(t, http.StatusOK, "GET", "/v1/storage", remoteTokens[u], nil)
		i := inline.call(t, http.StatusOK, "GET", "/v1/storage", inlineTokens[u], nil)
		require.Equal(t, r.JSON(t), i.JSON(t), "storage of user %d after the remote copies", u)
		path := e2ekit.UsagePath(windows[0][0], windows[0][1], 0)
		r = remote.call(t, http.StatusOK, "GET", path, remoteTokens[u], nil)
		i = inline.call(t, http.StatusOK, "GET", path, inlineTokens[u], nil)
		rj, ij := r.JSON(t), i.JSON(t)
		delete(rj, "cost") // within 1e-18 of exact each, checked above
		delete(ij, "cost")
		require.Equal(t, rj, ij, "usage of user %d after the remote copies", u)
	}
	t.Logf("%d commands, %d file events; positions up to %d equal; checked in %s", len(script), fileEvents, last, time.Since(startTest))
}
