// Package fulldisk makes the files of a test process stop growing at a
// size, as a full disk does, without privileges: it sets RLIMIT_FSIZE, so
// that the kernel cuts a write at the limit and fails it with EFBIG where
// a full disk says ENOSPC (the Go runtime ignores the SIGXFSZ that comes
// with it). The limit holds for every file the process writes: use it only
// in tests that do not run in parallel and write no other file meanwhile
// (log to memory).
package fulldisk

import (
	"syscall"
	"testing"
)

// Limit stops every file of this process from growing past n bytes until
// the returned function, or the end of the test, lifts the limit.
func Limit(t testing.TB, n int64) (lift func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatalf("fulldisk: %v", err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: uint64(max(n, 0)), Max: old.Max}); err != nil {
		t.Fatalf("fulldisk: %v", err)
	}
	lift = func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Errorf("fulldisk: lift the limit: %v", err)
		}
	}
	t.Cleanup(lift)
	return lift
}
