package process

import (
	"os"
	"runtime/debug"
)

// Garbage collector defaults for the binaries, unless GOGC or GOMEMLIMIT
// (the Go runtime's own settings) say otherwise.
const (
	// gcPercent: collect when the heap has grown 400% past what the last
	// collection kept, not Go's 100%. The live heap of either binary is a
	// few MiB, while a 1,000-file set allocates a few MiB per request: at
	// 100% the api collected during nearly every such request and handed
	// pages back to the kernel in between (madvise), a fifth of its CPU in
	// a profile of those sets; at 400% a 1,000-file set took 22–24 ms
	// against 28–31 ms.
	gcPercent = 400
	// memoryLimit caps what that headroom may cost: near 80 MiB the
	// collector runs as often as it must to stay under it (a soft limit:
	// a heap that truly needs more gets it, at the price of CPU). With
	// 400% the heap grows to the limit whenever requests allocate a lot
	// and keep it a while (sixteen 10,000-file previews at once held the
	// api at 133 MiB under a 128 MiB limit, 89 MiB under 80), so the limit,
	// not the percentage, is what bounds the process; the 1,000-file set
	// took the same 14–15 ms under either. A tight limit costs as much as
	// it saves: at 64 MiB the 1,000-file set was 26–28 ms against 22–24.
	memoryLimit = 80 << 20
)

// tuneGC applies the defaults above where the environment sets nothing.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}
