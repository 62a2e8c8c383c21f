package server

import (
	"fmt"
	"sync"
	"testing"
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
		p.do(fmt.Sprint(i), func() { defer blocked.Done(); <-release }) // a connection each
	}
	ran := make(chan struct{})
	p.do("another", func() { close(ran) })
	<-ran // would hang if the blocked sends held it up
	close(release)
	blocked.Wait()
	idle := make(chan struct{})
	p.do("idle", func() { close(idle) })
	<-idle
	// goleak (TestMain) checks that the workers have exited.
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
		p.do(fmt.Sprint(i%100), func() { // 100 connections
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
	s.senders.mu.Lock()
	queued := len(s.senders.queue) - s.senders.head
	s.senders.mu.Unlock()
	if queued != 0 {
		t.Errorf("%d pushes queued behind a running one, want 0 (it looks again itself)", queued)
	}
	if !p.again.Load() {
		t.Error("the notices were lost: the running push would not look again")
	}
}

// TestSendersHandBackTheRestOfABlockedConnection: one stream of a
// connection blocks (its client does not read); the connection's other
// sends, queued in the same batch behind it, still run.
func TestSendersHandBackTheRestOfABlockedConnection(t *testing.T) {
	p := newSenders()
	release := make(chan struct{})
	done := make(chan struct{})
	p.mu.Lock() // queue the whole batch before any worker takes it
	p.enqueueLocked("conn", func() { <-release }, func() { close(done) })
	p.workers++
	go p.worker()
	p.mu.Unlock()
	<-done // would hang without the hand-back
	close(release)
	idle := make(chan struct{})
	p.do("conn", func() { close(idle) })
	<-idle
}
