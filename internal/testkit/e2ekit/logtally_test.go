package e2ekit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLogTallyCountsByKeyInFirstOrder(t *testing.T) {
	since := time.Unix(1000, 0)
	var l LogTally
	l.Add("WARN b", since.Add(2*time.Second))
	l.Add("ERROR a", since.Add(3*time.Second))
	l.Add("WARN b", since.Add(4500*time.Millisecond))
	require.Equal(t, "worker:\n     2×    2.0s..   4.5s WARN b\n     1×    3.0s..   3.0s ERROR a", l.String("worker", since))
	var none LogTally
	require.Equal(t, "api:", none.String("api", since))
}
