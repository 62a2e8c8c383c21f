package main

import (
	"fmt"
	"syscall"
)

// raiseNoFile raises this process's open-file limit to at least want if
// it is lower. Setting it explicitly (rather than relying on Go's raise
// of the soft limit at start, which child processes do not inherit)
// makes the broker this process starts inherit it too.
func raiseNoFile(want uint64) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if want <= l.Cur && l.Cur == l.Max {
		return nil
	}
	n := l
	n.Cur = max(l.Max, want)
	if n.Cur > l.Max {
		n.Max = n.Cur // only root may raise the hard limit
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err != nil {
		if want > l.Max {
			return fmt.Errorf("the watch scenario needs %d open files, the hard limit is %d (ulimit -n): %w", want, l.Max, err)
		}
		n = l
		n.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err != nil {
			return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", n.Cur, err)
		}
	}
	return nil
}
