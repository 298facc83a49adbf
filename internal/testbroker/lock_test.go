package testbroker

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A test that calls New twice must not queue behind an exclusive test that
// is waiting for it: the second call goes straight through.
func TestSecondNewDoesNotWaitBehindAnExclusiveWaiter(t *testing.T) {
	New(t)

	// Another binary's NewExclusive: through the gate, then waiting for
	// this test's shared hold on the main lock.
	gate := openLock(t, filepath.Join(os.TempDir(), "epoch-testbroker.gate"))
	defer gate.Close()
	main := openLock(t, filepath.Join(os.TempDir(), "epoch-testbroker.lock"))
	defer main.Close()
	flock(t, gate, syscall.LOCK_EX)
	exclusive := make(chan struct{})
	go func() {
		_ = syscall.Flock(int(main.Fd()), syscall.LOCK_EX)
		close(exclusive)
	}()

	second := make(chan struct{})
	go func() {
		New(t)
		close(second)
	}()
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("the second New waits behind the exclusive waiter, which waits for this test")
	}
	select {
	case <-exclusive:
		t.Fatal("the exclusive waiter got the lock while this test holds it")
	default:
	}
}
