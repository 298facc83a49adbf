package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/catacloud/epoch/"

// layers are the application's folders, lowest first: a package may import
// packages of its own layer and of the layers below it, never of one above.
// A package is in the layer of the longest prefix that names it.
var layers = [][]string{
	{"internal/platform/"},    // pool and transactions, sqlc output, retries, a binary's life, the long operations' runner
	{"internal/core/"},        // the domain and the event store
	{"internal/delivery/"},    // the way out: dispatch, outbox and relay, broker, consumer, heal, catch-up
	{"internal/commandside/"}, // commands, the inline projections, their reads, the gate
	{"internal/subscribers"},  // the registry and the movable subscribers
	{"internal/ops/"},         // the operator's path, status, metrics, housekeeping, migrations
	{"internal/httpapi"},      // the HTTP API
	{"cmd/api", "cmd/worker"}, // the binaries
	{"cmd/epochctl"},          // the operator's command line, which speaks only HTTP to the api
	{"cmd/bench"},             // the benchmark tool
	{"internal/layout"},       // this test
}

// kits are the test kits and the harness under them: imported by tests,
// other kits, the system tests and the benchmark tool (which runs on the
// harness and drives the test cluster), never by the application's code.
const kits = "internal/testkit/"

// systemTests run the built binaries; nothing imports them.
const systemTests = "internal/systemtest/"

// kitUsers may import kits besides tests: the bench.
var kitUsers = []string{"cmd/bench"}

// forbidden are imports the layers allow that the design does not.
var forbidden = map[[2]string]string{
	{"internal/ops/migrate", "internal/delivery/outbox"}: "migrate applies the schema; the relays' wake-up after it is the api's (cmd/api migrateWhenReady)",
}

func layerOf(path string) int {
	best, at := -1, -1
	for i, prefixes := range layers {
		for _, p := range prefixes {
			if (path == strings.TrimSuffix(p, "/") || strings.HasPrefix(path, p)) && len(p) > best {
				best, at = len(p), i
			}
		}
	}
	return at
}

type pkg struct {
	ImportPath string
	Imports    []string
}

func modulePackages(t *testing.T) []pkg {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err)
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "./...")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("go list: %v\n%s", err, exit.Stderr)
	}
	require.NoError(t, err)
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		pkgs = append(pkgs, p)
	}
	require.NotEmpty(t, pkgs)
	return pkgs
}

// Nothing points up: no package's code imports a package of a higher layer,
// a system test, or (outside the kits and the bench) a test kit, nor makes
// a forbidden import; and every package under internal/ and cmd/ has its
// place. Tests may import what they need.
func TestNothingPointsUp(t *testing.T) {
	t.Parallel()
	var problems []string
	checked := 0
	for _, p := range modulePackages(t) {
		from, ok := strings.CutPrefix(p.ImportPath, module)
		if !ok || !strings.HasPrefix(from, "internal/") && !strings.HasPrefix(from, "cmd/") {
			continue
		}
		checked++
		kit := strings.HasPrefix(from, kits)
		system := strings.HasPrefix(from, systemTests)
		mayUseKits := kit || system
		for _, u := range kitUsers {
			mayUseKits = mayUseKits || from == u
		}
		if !kit && !system && layerOf(from) < 0 {
			problems = append(problems, from+": in no layer (add its folder to layers)")
			continue
		}
		for _, imp := range p.Imports {
			to, ok := strings.CutPrefix(imp, module)
			if !ok || !strings.HasPrefix(to, "internal/") && !strings.HasPrefix(to, "cmd/") {
				continue
			}
			if why, ok := forbidden[[2]string{from, to}]; ok {
				problems = append(problems, from+" imports "+to+": "+why)
			}
			switch {
			case strings.HasPrefix(to, systemTests):
				problems = append(problems, from+" imports the system test "+to)
			case strings.HasPrefix(to, kits):
				if !mayUseKits {
					problems = append(problems, from+" imports the test kit "+to)
				}
			case kit || system:
				// Kits and system tests stand above every layer.
			case layerOf(to) > layerOf(from):
				problems = append(problems, from+" imports "+to+", a higher layer")
			}
		}
	}
	require.Greater(t, checked, 30, "too few packages listed")
	require.Empty(t, problems)
}

// The rule itself: a package's layer is its longest prefix's.
func TestLayerOf(t *testing.T) {
	t.Parallel()
	require.Less(t, layerOf("internal/platform/database"), layerOf("internal/core/eventstore"))
	require.Less(t, layerOf("internal/delivery/outbox"), layerOf("internal/commandside/command"))
	require.Equal(t, layerOf("internal/subscribers"), layerOf("internal/subscribers/billing"))
	require.Less(t, layerOf("internal/subscribers/billing"), layerOf("internal/ops/operator"))
	require.Equal(t, -1, layerOf("internal/elsewhere"))
}
