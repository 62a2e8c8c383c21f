//go:build !(linux && amd64)

package clientlib

import "time"

// wallMicros returns the wall clock as Unix microseconds.
func wallMicros() int64 { return time.Now().UnixMicro() }
