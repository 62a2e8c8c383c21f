package broker

import (
	"net/url"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/queue"
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
	q *queue.Queue[struct{}, queuedFetch]
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
		q = &fetchQueue{q: queue.New[struct{}](b.cfg.Limits.MaxIdPRequestsPerHost, 0, func(f queuedFetch) {
			f.e.run(f.c, f.deadline, f.timeout)
		})}
		if b.queues == nil {
			b.queues = map[string]*fetchQueue{}
		}
		b.queues[host] = q
	}
	return q
}

// add runs f now if the host has room, else queues it. b.wg must already
// count it.
func (q *fetchQueue) add(f queuedFetch) { q.q.Add(struct{}{}, f) }
