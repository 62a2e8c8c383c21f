// Package logtest collects output that several goroutines write, such as a
// test's logs, so that tests can assert what was (never) written: the one
// secrets-in-output check is AssertNone.
package logtest

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// Buffer is a bytes.Buffer safe for concurrent Write and String.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p; each call's bytes stay together.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// AssertNone fails t once for each needle found in a haystack. Both are
// maps from a name for the message (never the value: a needle is a secret)
// to the text; empty needles are skipped.
func AssertNone(t testing.TB, haystacks, needles map[string]string) {
	t.Helper()
	for hname, h := range haystacks {
		for nname, n := range needles {
			if n != "" && strings.Contains(h, n) {
				t.Errorf("the %s contain the %s", hname, nname)
			}
		}
	}
}
