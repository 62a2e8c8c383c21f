//go:build !unix

package creds

// openNonblock: no FIFO semantics to guard against on this system.
const openNonblock = 0
