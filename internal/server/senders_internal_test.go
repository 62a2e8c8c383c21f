package server

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestSendersNeverWaitOnABlockedSend: sends blocked on clients that do
// not read (here: functions that wait) take every worker, and still the
// next send runs (the watchdog adds a worker); every send runs once, and
// no worker is left once the queue is empty.
func TestSendersNeverWaitOnABlockedSend(t *testing.T) {
	p := newSenders()
	release := make(chan struct{})
	var blocked sync.WaitGroup
	for i := range maxSenders + 10 { // every worker blocked, and more waiting
		blocked.Add(1)
		p.Add(fmt.Sprint(i), func() { defer blocked.Done(); <-release }) // a connection each
	}
	ran := make(chan struct{})
	p.Add("another", func() { close(ran) })
	within(t, "a send behind blocked ones", ran) // would hang if the blocked sends held it up
	close(release)
	blocked.Wait()
	idle := make(chan struct{})
	p.Add("idle", func() { close(idle) })
	within(t, "a send once the others ended", idle)
	// goleak (TestMain) checks that the workers have exited.
}

// within fails the test if ch is not closed in 10 s: a bound for a
// failure, not a wait for success.
func within(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not done in 10 s", what)
	}
}

// TestSendersRunEachSendOnce: a burst much larger than the workers runs
// every send exactly once.
func TestSendersRunEachSendOnce(t *testing.T) {
	p := newSenders()
	const n = 10000
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := make(map[int]int, n)
	for i := range n {
		wg.Add(1)
		p.Add(fmt.Sprint(i%100), func() { // 100 connections
			defer wg.Done()
			mu.Lock()
			seen[i]++
			mu.Unlock()
		})
	}
	wg.Wait()
	for i := range n {
		if seen[i] != 1 {
			t.Fatalf("send %d ran %d times", i, seen[i])
		}
	}
}

// TestPushedWatchHoldsOneSenderWhileBlocked: a stream whose send is
// blocked (a client that does not read) gets any number of notices and
// still holds one push, queued or running, never one per update.
func TestPushedWatchHoldsOneSenderWhileBlocked(t *testing.T) {
	s := &Server{senders: newSenders()}
	p := &pushedWatch{s: s, end: make(chan error, 1)}
	// Stand in for a push that is running: busy, as notify leaves it.
	p.busy.Store(true)
	for range 1000 {
		p.notify()
	}
	if queued := s.senders.Len(); queued != 0 {
		t.Errorf("%d pushes queued behind a running one, want 0 (it looks again itself)", queued)
	}
	if !p.again.Load() {
		t.Error("the notices were lost: the running push would not look again")
	}
}

// TestSendersNeverStallBehindBlockedSendsOfOneConnection (red team,
// issue 11): one connection with more blocked sends (clients that do not
// read) than there are workers, then the send of a stream on the same
// connection whose client reads: it runs, within a few stall periods,
// and so does another connection's.
func TestSendersNeverStallBehindBlockedSendsOfOneConnection(t *testing.T) {
	p := newSenders()
	release := make(chan struct{})
	var blocked sync.WaitGroup
	for range 3 * maxSenders {
		blocked.Add(1)
		p.Add("conn", func() { defer blocked.Done(); <-release })
	}
	same, other := make(chan struct{}), make(chan struct{})
	p.Add("conn", func() { close(same) })
	p.Add("other", func() { close(other) })
	// ~3 stall periods expected; bounded generously for a loaded machine.
	within(t, "the reading stream's send on the same connection", same)
	within(t, "the send on another connection", other)
	close(release)
	blocked.Wait()
}
