//go:build linux && amd64

package clientlib

import (
	"syscall"
	"time"
)

// wallMicros returns the wall clock as Unix microseconds. On linux/amd64
// syscall.Gettimeofday is one vDSO call (syscall/asm_linux_amd64.s calls
// runtime·vdsoGettimeofdaySym, falling back to the system call only
// without a vDSO), where time.Now reads the wall and the monotonic clock
// through two: half the cost of a cached Token. It must be the wall
// clock: a monotonic clock stops while a laptop or VM is suspended and
// would hand out an expired token after resume.
func wallMicros() int64 {
	var tv syscall.Timeval
	if syscall.Gettimeofday(&tv) != nil {
		return time.Now().UnixMicro()
	}
	return tv.Sec*1e6 + tv.Usec
}
