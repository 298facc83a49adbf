package dispatch_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/delivery/dispatch"
)

// isolation records what Isolate did with a batch of ints, where the odd
// ones fail and bad fails everything.
type isolation struct {
	calls, applied, failed []int
	split                  int
}

var bad = errors.New("database gone")

func (r *isolation) of(stopAt int) dispatch.Isolation[int] {
	return dispatch.Isolation[int]{
		Apply: func(items []int) error {
			r.calls = append(r.calls, len(items))
			for _, i := range items {
				if i == stopAt {
					return bad
				}
				if i%2 == 1 {
					return errors.New("odd")
				}
			}
			return nil
		},
		Stop:    func(err error) bool { return errors.Is(err, bad) },
		Split:   func(error) { r.split++ },
		Applied: func(one []int) error { r.applied = append(r.applied, one[0]); return nil },
		Failed:  func(one []int, _ error) error { r.failed = append(r.failed, one[0]); return nil },
	}
}

func TestIsolate(t *testing.T) {
	t.Parallel()

	// A batch that applies is applied once, whole.
	var r isolation
	whole, err := dispatch.Isolate([]int{2, 4}, r.of(-1))
	require.NoError(t, err)
	require.True(t, whole)
	require.Equal(t, []int{2}, r.calls)
	require.Empty(t, r.applied)

	// A failing one is isolated: each alone, the failing one settled as
	// failed, the others as applied, in order.
	r = isolation{}
	whole, err = dispatch.Isolate([]int{2, 3, 4, 5}, r.of(-1))
	require.NoError(t, err)
	require.False(t, whole)
	require.Equal(t, []int{4, 1, 1, 1, 1}, r.calls)
	require.Equal(t, []int{2, 4}, r.applied)
	require.Equal(t, []int{3, 5}, r.failed)
	require.Equal(t, 1, r.split)

	// A batch of one is applied once: its failure is its item's.
	r = isolation{}
	_, err = dispatch.Isolate([]int{3}, r.of(-1))
	require.NoError(t, err)
	require.Equal(t, []int{1}, r.calls)
	require.Equal(t, []int{3}, r.failed)
	require.Zero(t, r.split)

	// An error Stop names ends it at once, whole or alone.
	for _, batch := range [][]int{{6, 2}, {3, 6, 2}} {
		r = isolation{}
		_, err = dispatch.Isolate(batch, r.of(6))
		require.ErrorIs(t, err, bad)
		require.False(t, slices.Contains(r.applied, 2), "nothing after the stop is applied")
	}
}
