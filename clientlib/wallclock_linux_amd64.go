//go:build linux && amd64

package clientlib

import (
	"syscall"
	"time"
)

// wallMicros returns the wall clock as Unix microseconds in one vDSO call
// (time.Now makes two). Not the monotonic clock: it stops while a machine
// is suspended, and would hand out an expired token after resume.
func wallMicros() int64 {
	var tv syscall.Timeval
	if syscall.Gettimeofday(&tv) != nil {
		return time.Now().UnixMicro()
	}
	return tv.Sec*1e6 + tv.Usec
}
