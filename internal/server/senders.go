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
// Sends wait in a queue that up to maxSenders workers drain; a worker
// exits when the queue is empty, so an idle broker runs none. A fresh
// goroutine per send would grow its stack from 2 KiB on every update
// (runtime.copystack, stack allocation): a refresh pushed to 100,000
// streams spent most of its CPU there.
//
// A send blocks while its client does not read (flow control), holding
// its worker. So that such clients cannot stall everyone's sends, a
// watchdog adds a worker, beyond maxSenders, whenever the queue made no
// progress for stallAfter: a stalled send costs one goroutine, as it
// would on the stream's own.
type senders struct {
	mu       sync.Mutex
	queue    []func() // FIFO from head
	head     int
	workers  int
	taken    uint64 // sends dequeued, for the watchdog
	watching bool   // a watchdog timer is armed
}

const (
	maxSenders = 64
	stallAfter = 50 * time.Millisecond
)

func newSenders() *senders { return &senders{} }

// do queues f; it does not wait.
func (p *senders) do(f func()) {
	p.mu.Lock()
	p.queue = append(p.queue, f)
	if p.workers < maxSenders {
		p.workers++
		go p.worker()
	}
	if !p.watching {
		p.watching = true
		time.AfterFunc(stallAfter, p.watch(p.taken))
	}
	p.mu.Unlock()
}

// next dequeues a send, or retires the calling worker when none waits.
func (p *senders) next() (func(), bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head == len(p.queue) {
		p.workers--
		p.queue, p.head = p.queue[:0], 0
		return nil, false
	}
	f := p.queue[p.head]
	p.queue[p.head] = nil
	p.head++
	p.taken++
	return f, true
}

func (p *senders) worker() {
	for {
		f, ok := p.next()
		if !ok {
			return
		}
		f()
	}
}

// watch returns the watchdog's check: sends still waiting and none taken
// since taken0 means every worker is blocked; one more starts.
func (p *senders) watch(taken0 uint64) func() {
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.head == len(p.queue) {
			p.watching = false
			return
		}
		if p.taken == taken0 {
			p.workers++
			go p.worker()
		}
		time.AfterFunc(stallAfter, p.watch(p.taken))
	}
}
