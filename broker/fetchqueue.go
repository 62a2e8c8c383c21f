package broker

import (
	"net/url"
	"sync"
	"time"
)

// fetchQueue runs the identity-provider requests of the tenants of one
// token endpoint host, at most limit at a time (Config.
// Limits.MaxIdPRequestsPerHost); the others wait in order, as an entry and
// its call, without a goroutine. A broker starting ten thousand tenants
// so runs a few hundred goroutines, not ten thousand whose stacks and
// descriptors the runtime would keep after they end. A request's timeout
// counts from when it was queued, so that behind a hung host the waiting
// ones fail in time, as they would if each waited for a slot itself.
type fetchQueue struct {
	limit int

	mu      sync.Mutex
	running int
	waiting []queuedFetch // FIFO; waiting[head:] are live
	head    int
}

type queuedFetch struct {
	e        *entry
	c        *call
	timeout  time.Duration // the attempt's timeout, from deadline
	deadline time.Time
}

// queueLocked returns the queue of tokenURL's host. b.mu must be held.
func (b *Broker) queueLocked(tokenURL string) *fetchQueue {
	host := ""
	if u, err := url.Parse(tokenURL); err == nil {
		host = u.Host // a custom Fetcher may have no URL: those share ""
	}
	q := b.queues[host]
	if q == nil {
		q = &fetchQueue{limit: b.cfg.Limits.MaxIdPRequestsPerHost}
		if b.queues == nil {
			b.queues = map[string]*fetchQueue{}
		}
		b.queues[host] = q
	}
	return q
}

// add runs f now if the host has room, else queues it. b.wg must already
// count it.
func (q *fetchQueue) add(f queuedFetch) {
	q.mu.Lock()
	if q.running < q.limit {
		q.running++
		q.mu.Unlock()
		go q.work(f)
		return
	}
	q.waiting = append(q.waiting, f)
	q.mu.Unlock()
}

// work runs f, then the queued requests one after another while there
// are any, on the same goroutine.
func (q *fetchQueue) work(f queuedFetch) {
	for {
		f.e.run(f.c, f.deadline, f.timeout)
		q.mu.Lock()
		if q.head == len(q.waiting) {
			q.running--
			// Drop the drained backlog's array: after a start-up burst
			// it would hold thousands of slots for nothing.
			q.waiting, q.head = nil, 0
			q.mu.Unlock()
			return
		}
		f = q.waiting[q.head]
		q.waiting[q.head] = queuedFetch{}
		q.head++
		if q.head >= 1024 && 2*q.head >= len(q.waiting) { // a backlog that never drains
			n := copy(q.waiting, q.waiting[q.head:])
			clear(q.waiting[n:])
			q.waiting, q.head = q.waiting[:n], 0
		}
		q.mu.Unlock()
	}
}
