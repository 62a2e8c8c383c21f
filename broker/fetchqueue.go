package broker

import (
	"net/url"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/queue"
)

// fetchQueue runs the requests of one token endpoint host, at most
// Limits.MaxIdPRequestsPerHost at a time; the others wait in order, without
// a goroutine each (the README's Performance section has the figures).
type fetchQueue = queue.Queue[struct{}, queuedFetch]

type queuedFetch struct {
	e       *entry
	c       *call
	timeout time.Duration // the attempt's timeout, from when it is sent
	until   time.Time     // dropped unsent if still queued then
}

// queueWait is how long a request may wait for a slot before it is dropped
// unsent, so that a hung host collects no backlog: six attempts' worth, at
// most a minute.
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
		q = queue.New[struct{}](b.cfg.Limits.MaxIdPRequestsPerHost, 0, func(f queuedFetch) {
			f.e.run(f.c, f.until, f.timeout)
		})
		if b.queues == nil {
			b.queues = map[string]*fetchQueue{}
		}
		b.queues[host] = q
	}
	return q
}
