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
// Sends are queued by connection, and a worker runs all of one
// connection's waiting sends back to back: HTTP/2 then writes them in a
// few system calls, where sends in the random order of the broker's
// notices cost a write each (a refresh pushed to 100,000 streams over
// 1,000 connections: ~30 µs of broker CPU per stream instead of ~50).
// Up to maxSenders workers drain the queue and exit when it is empty, so
// an idle broker runs none.
//
// A send blocks while its client does not read (flow control), holding
// its worker. So that it holds up no one else: when one send has run for
// stallAfter, the rest of its connection's batch goes back to the queue
// for another worker; and when the queue made no progress for
// stallAfter, a watchdog adds a worker beyond maxSenders. A stalled send
// costs one goroutine, as it would on the stream's own.
type senders struct {
	mu       sync.Mutex
	queue    []*sendBatch // FIFO from head
	head     int
	pending  map[string]*sendBatch // queued batches by connection
	workers  int
	taken    uint64 // batches dequeued, for the watchdog
	watching bool   // a watchdog timer is armed
}

// sendBatch is one connection's sends; next and handedBack are guarded
// by senders.mu.
type sendBatch struct {
	key        string
	fs         []func()
	next       int       // index of the next send to run
	started    time.Time // when fs[next-1] started
	handedBack bool      // the rest went back to the queue
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
	p.enqueueLocked(key, f)
	if p.workers < maxSenders {
		p.workers++
		go p.worker()
	}
	if !p.watching {
		p.watching = true
		time.AfterFunc(stallAfter, p.watch(p.taken))
	}
}

func (p *senders) enqueueLocked(key string, fs ...func()) {
	b := p.pending[key]
	if b == nil {
		b = &sendBatch{key: key}
		p.pending[key] = b
		p.queue = append(p.queue, b)
	}
	b.fs = append(b.fs, fs...)
}

// take dequeues a batch, or retires the calling worker when none waits.
func (p *senders) take() (*sendBatch, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head == len(p.queue) {
		p.workers--
		p.queue, p.head = p.queue[:0], 0
		return nil, false
	}
	b := p.queue[p.head]
	p.queue[p.head] = nil
	p.head++
	p.taken++
	delete(p.pending, b.key)
	return b, true
}

// sendWorker is a worker's current batch, guarded by senders.mu (its
// stall timer reads it).
type sendWorker struct{ cur *sendBatch }

// nextSend returns the batch's next send, unless none is left or the
// rest was handed back.
func (p *senders) nextSend(w *sendWorker, b *sendBatch) (func(), bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.handedBack || b.next == len(b.fs) {
		w.cur = nil
		return nil, false
	}
	w.cur = b
	f := b.fs[b.next]
	b.fs[b.next] = nil
	b.next++
	b.started = time.Now()
	return f, true
}

// handBack requeues the rest of w's batch if its current send has run
// for stallAfter: the worker's timer calls it.
func (p *senders) handBack(w *sendWorker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := w.cur
	if b == nil || b.handedBack || b.next == len(b.fs) || time.Since(b.started) < stallAfter {
		return
	}
	b.handedBack = true
	p.enqueueLocked(b.key, b.fs[b.next:]...)
	if p.workers < maxSenders {
		p.workers++
		go p.worker()
	}
}

func (p *senders) worker() {
	w := &sendWorker{}
	stalled := time.AfterFunc(time.Hour, func() { p.handBack(w) })
	stalled.Stop()
	defer stalled.Stop()
	for {
		b, ok := p.take()
		if !ok {
			return
		}
		for {
			f, ok := p.nextSend(w, b)
			if !ok {
				break
			}
			stalled.Reset(stallAfter)
			f()
			stalled.Stop()
		}
	}
}

// watch returns the watchdog's check: batches still waiting and none
// taken since taken0 means every worker is blocked; one more starts.
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
