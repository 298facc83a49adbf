package failovertest_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

var (
	bin e2ekit.Binaries
	// root is the module's directory, where the pair's script is.
	root string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "failovertest: go env GOMOD: %v\n", err)
		return 1
	}
	root = filepath.Dir(strings.TrimSpace(string(gomod)))
	bin, err = e2ekit.Build()
	if err != nil {
		fmt.Fprintf(os.Stderr, "failovertest: %v\n", err)
		return 1
	}
	defer bin.Remove()
	return m.Run()
}
