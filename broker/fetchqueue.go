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
// descriptors the runtime would keep after they end. A request's own
// timeout counts from when it is sent; one that waited longer than
// queueWait is dropped unsent, so that a hung host does not collect a
// backlog. Callers wait at most the attempt's timeout from their call
// (see await), queued or not.
type fetchQueue struct {
	q *queue.Queue[struct{}, queuedFetch]
}

type queuedFetch struct {
	e       *entry
	c       *call
	timeout time.Duration // the attempt's timeout, from when it is sent
	until   time.Time     // dropped unsent if still queued then
}

// queueWait is how long a request of the given timeout may wait for a
// slot: six attempts' worth, at most a minute. A broker starting 50,000
// tenants of one host (at 128 requests of 50 ms at a time, about 20 s)
// sends them all.
func queueWait(timeout time.Duration) time.Duration {
	return max(timeout, min(6*timeout, time.Minute))
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
			f.e.run(f.c, f.until, f.timeout)
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
