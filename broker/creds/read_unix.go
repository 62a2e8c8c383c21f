//go:build unix

package creds

import "syscall"

// openNonblock keeps open(2) of a FIFO from waiting for a writer; it
// changes nothing for a regular file.
const openNonblock = syscall.O_NONBLOCK
