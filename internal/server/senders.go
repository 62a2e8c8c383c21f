package server

import (
	"sync"
	"time"
)

// senders runs WatchToken sends off the streams' own goroutines, so that
// an idle stream's goroutine never grows its stack with the deep send
// path (the guard's audit, the codec, the transport) and keeps an 8 KiB
// stack instead of 16 KiB for its whole life.
//
// Sends are queued by connection and taken one at a time, a connection's
// sends one after another: HTTP/2 then writes them in a few system
// calls, where sends in the random order of the broker's notices cost a
// write each (a refresh pushed to 100,000 streams over 1,000
// connections: ~30 µs of broker CPU per stream instead of ~50). Up to
// maxSenders workers take sends and exit when none is left, so an idle
// broker runs none.
//
// A send blocks while its client does not read (flow control). A worker
// whose send has run for stallAfter leaves the pool: another worker
// starts in its place, and the blocked one ends when its send does. So a
// stalled send costs one goroutine, as it would on the stream's own, and
// holds up no other send for longer than stallAfter — not on other
// connections, nor on its own (the next send of a connection does not
// wait for the previous one).
type senders struct {
	mu      sync.Mutex
	queue   []*sendBatch // FIFO from head
	head    int
	pending map[string]*sendBatch // queued batches by connection
	active  int                   // workers in the pool (not stalled)
}

// sendBatch is one connection's queued sends.
type sendBatch struct {
	key  string
	fs   []func()
	next int // index of the next send to take
}

// sendWorker is one worker's state, guarded by senders.mu (its stall
// timer reads it).
type sendWorker struct {
	sending bool
	started time.Time
	stalled bool // it left the pool; it ends when its send does
}

const (
	maxSenders = 64
	stallAfter = 50 * time.Millisecond
)

func newSenders() *senders { return &senders{pending: map[string]*sendBatch{}} }

// do queues f among the sends of connection key; it does not wait.
func (p *senders) do(key string, f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.pending[key]
	if b == nil {
		b = &sendBatch{key: key}
		p.pending[key] = b
		p.queue = append(p.queue, b)
	}
	b.fs = append(b.fs, f)
	p.growLocked()
}

// growLocked starts a worker if sends wait and the pool has room.
func (p *senders) growLocked() {
	if p.active < maxSenders && p.head < len(p.queue) {
		p.active++
		go p.worker()
	}
}

// takeLocked returns the next send: the head connection's next one.
func (p *senders) takeLocked() (func(), bool) {
	if p.head == len(p.queue) {
		return nil, false
	}
	b := p.queue[p.head]
	f := b.fs[b.next]
	b.fs[b.next] = nil
	b.next++
	if b.next == len(b.fs) {
		p.queue[p.head] = nil
		p.head++
		delete(p.pending, b.key)
		if p.head == len(p.queue) {
			p.queue, p.head = p.queue[:0], 0
		}
	}
	return f, true
}

func (p *senders) worker() {
	w := &sendWorker{}
	stall := time.AfterFunc(time.Hour, func() { p.stall(w) })
	stall.Stop()
	defer stall.Stop()
	p.mu.Lock()
	for {
		if w.stalled {
			break // replaced while its send blocked; not counted any more
		}
		f, ok := p.takeLocked()
		if !ok {
			p.active--
			break
		}
		w.sending, w.started = true, time.Now()
		p.mu.Unlock()
		stall.Reset(stallAfter)
		f()
		stall.Stop()
		p.mu.Lock()
		w.sending = false
	}
	p.mu.Unlock()
}

// stall takes w out of the pool if its send has run for stallAfter, and
// starts another worker in its place.
func (p *senders) stall(w *sendWorker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !w.sending || w.stalled || time.Since(w.started) < stallAfter {
		return // a timer of an earlier send, or the send just ended
	}
	w.stalled = true
	p.active--
	p.growLocked()
}
