package server

import "testing"

// The pool's own behaviour (blocked sends, each send once, a connection's
// sends behind blocked ones) is tested in broker/queue, which runs it.

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
