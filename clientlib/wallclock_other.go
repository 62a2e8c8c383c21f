//go:build !(linux && amd64)

package clientlib

import "time"

// wallMicros returns the wall clock as Unix microseconds (see
// wallclock_linux_amd64.go for why the wall clock).
func wallMicros() int64 { return time.Now().UnixMicro() }
