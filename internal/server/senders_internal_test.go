package server

import (
	"sync"
	"testing"
)

// TestSendersNeverWaitOnABlockedSend: sends blocked on clients that do
// not read (here: functions that wait) take workers, then goroutines of
// their own, and never hold up another send; every send runs once.
func TestSendersNeverWaitOnABlockedSend(t *testing.T) {
	p := newSenders()
	release := make(chan struct{})
	var blocked sync.WaitGroup
	for range maxSenders + 10 { // every worker blocked, and then some
		blocked.Add(1)
		p.do(func() { defer blocked.Done(); <-release })
	}
	ran := make(chan struct{})
	p.do(func() { close(ran) })
	<-ran // would hang if the blocked sends held it up
	close(release)
	blocked.Wait()
	if n := p.n.Load(); n > maxSenders {
		t.Errorf("%d workers, want at most %d", n, maxSenders)
	}
}
