package e2e_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// bin holds the api and worker binaries built by TestMain.
var bin e2ekit.Binaries

// TestMain builds the binaries once for the whole test binary, so every test
// runs exactly what ships.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	bin, err = e2ekit.Build()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer bin.Remove()
	return m.Run()
}

// newRecorder records the exchange of the vhost at amqpURL (see
// e2ekit.Recorder).
func newRecorder(t *testing.T, amqpURL string) *e2ekit.Recorder {
	t.Helper()
	return e2ekit.NewRecorder(t, e2ekit.RecorderConfig{URL: amqpURL, Queue: "e2e.recorder"})
}
