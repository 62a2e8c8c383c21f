package broker

import (
	"sync"
	"time"
)

// publishLocked offers the current state to subscribers and health, skipping
// repeats.
func (e *entry) publishLocked(now time.Time) {
	u := e.snapshotLocked(now)
	p := published{state: u.Status.State}
	if u.Token != nil {
		p.version = u.Token.Version
	}
	if u.Status.LastError != nil {
		p.errText = u.Status.LastError.Error()
	}
	if p != e.sent {
		e.sent = p
		u.shared = new(sharedValue)
		e.pub = u
		for w := range e.subs {
			w.offer(u)
		}
	}
	if serving := u.Token != nil; e.isDefault && serving != e.serving {
		e.serving = serving
		if f := e.b.cfg.OnTenantHealth; f != nil {
			f(e.t.spec.Name, serving)
		}
	}
}

// kill ends the entry: no more refreshes, watches end with reason.
func (e *entry) kill(reason error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead != nil {
		return
	}
	e.dead = reason
	e.stopTimerLocked()
	for w := range e.subs {
		w.end(reason)
	}
	clear(e.subs)
}

func (e *entry) watch() (*Watch, error) {
	w := &Watch{e: e, ch: make(chan Update, 1), done: make(chan struct{})}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead != nil {
		return nil, e.dead
	}
	now := e.b.clock.Now()
	e.lastUsed = now
	e.subs[w] = struct{}{}
	// The state the other watchers hold, if it is still current, so that
	// they share its Shared value (a thousand new streams, one encoding).
	u := e.snapshotLocked(now)
	if sameState(u, e.pub) {
		u = e.pub
	}
	w.offer(u)
	if !e.usableLocked(now, 0) && e.inflight == nil && !now.Before(e.retryAt) {
		e.startLocked()
	}
	return w, nil
}

// Watch is a subscription to a key's updates. Updates are latest-wins: a
// slow reader skips intermediate states and never holds up the broker. A
// watched scope set is never evicted. The caller must Close the watch.
type Watch struct {
	e    *entry
	ch   chan Update
	done chan struct{}
	once sync.Once
	err  error // set before done is closed
}

// Updates delivers the key's states, the current one first.
func (w *Watch) Updates() <-chan Update { return w.ch }

// Done is closed when the broker ends the watch; Err then says why
// (ErrTenantRemoved, ErrTenantChanged or ErrClosed).
func (w *Watch) Done() <-chan struct{} { return w.done }

// Err returns why the watch ended, nil while it runs or after Close.
func (w *Watch) Err() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}

// Close unsubscribes; Updates then receives nothing new and Done is
// closed. It is idempotent and safe for concurrent use, and returns nil: a
// watch holds no resource whose release can fail.
func (w *Watch) Close() error {
	w.e.mu.Lock()
	delete(w.e.subs, w)
	w.e.lastUsed = w.e.b.clock.Now()
	w.e.mu.Unlock()
	w.end(nil)
	return nil
}

// offer replaces any unread update with u; called with e.mu held, which
// makes the drain-then-send atomic with respect to other senders.
func (w *Watch) offer(u Update) {
	select {
	case <-w.ch:
	default:
	}
	w.ch <- u
}

func (w *Watch) end(reason error) {
	w.once.Do(func() {
		w.err = reason
		close(w.done)
	})
}

// sameState reports whether a and b describe the same state of a key.
func sameState(a, b Update) bool {
	return a.Token == b.Token && a.Status.State == b.Status.State &&
		a.Status.NextRefresh.Equal(b.Status.NextRefresh) && errText(a.Status.LastError) == errText(b.Status.LastError)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
