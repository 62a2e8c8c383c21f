// Package hygiene is dissolved: file-mode checks live in broker/credentials,
// URL, loopback and CA rules in broker/upstream. What is left forwards the
// one call cmd/broker/token.go still makes; delete this package once that
// code (moving to internal/cli) calls credentials.CheckFileMode.
package hygiene

import "github.com/tokenbroker/tokenbroker/broker/credentials"

// CheckFileMode is credentials.CheckFileMode.
//
// Deprecated: call credentials.CheckFileMode.
func CheckFileMode(path string) error { return credentials.CheckFileMode(path) }
