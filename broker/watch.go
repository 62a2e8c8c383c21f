package broker

import (
	"sync"
	"sync/atomic"
	"time"
)

// publishLocked offers the current state to subscribers and health, skipping
// repeats.
func (e *entry) publishLocked(now time.Time) {
	u := e.snapshotLocked(now)
	if !sameState(u, e.pub) {
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

func (e *entry) watch(notify func()) (*Watch, error) {
	w := &Watch{e: e, notify: notify}
	if notify == nil {
		w.ready = make(chan struct{}, 1)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead != nil {
		return nil, e.dead
	}
	now := e.b.clock.Now()
	e.lastUsed = now
	e.subs[w] = struct{}{}
	// The other watchers' state, if still current, to share its Shared value.
	u := e.snapshotLocked(now)
	if sameState(u, e.pub) && u.Status.NextRefresh.Equal(e.pub.Status.NextRefresh) {
		u = e.pub
	}
	w.offer(u)
	if !e.usableLocked(now, 0) && e.inflight == nil {
		e.demandLocked(now)
	}
	return w, nil
}

// Watch is a subscription to a key's updates: wait on Ready, then call
// Next. Updates are latest-wins: a slow reader skips intermediate states
// and never holds up the broker. A watched scope set is never evicted. The
// caller must Close the watch.
type Watch struct {
	e      *entry
	ready  chan struct{} // one slot: Next has something new; nil with notify
	notify func()        // see WatchNotify

	mu     sync.Mutex // not e.mu: a woken reader must not wait for a fan-out
	next   Update     // the latest update, unread while has
	has    bool
	ended  bool
	reason error // why the broker ended the watch; nil after Close

	endedByBroker atomic.Bool // reason is set: Ended reads it without mu
}

// Ready receives when Next has something new: an update, or the end of
// the watch. The current state is waiting from the start.
func (w *Watch) Ready() <-chan struct{} { return w.ready }

// Next returns the latest update not returned yet; ok is false when none
// is waiting. ended reports that the watch has ended and nothing is left
// to read: Err says why.
func (w *Watch) Next() (u Update, ok, ended bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.has {
		u, w.next, w.has = w.next, Update{}, false
		if w.ended {
			w.signal() // the end's signal was taken by this update's
		}
		return u, true, false
	}
	return Update{}, false, w.ended
}

// Err returns why the watch ended (ErrTenantRemoved, ErrTenantChanged or
// ErrClosed), nil while it runs or after Close.
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reason
}

// Ended reports whether the broker has ended the watch (Err is not nil),
// though an update may still wait to be read. Unlike Err it takes no
// lock, so a WatchNotify callback may call it.
func (w *Watch) Ended() bool { return w.endedByBroker.Load() }

// Close unsubscribes; Next then returns nothing new and reports the end.
// It is idempotent and safe for concurrent use, and returns nil: a watch
// holds no resource whose release can fail.
func (w *Watch) Close() error {
	w.e.mu.Lock()
	delete(w.e.subs, w)
	w.e.lastUsed = w.e.b.clock.Now()
	w.e.mu.Unlock()
	w.end(nil)
	return nil
}

// offer replaces any unread update with u; called with e.mu held, which
// orders the offers of one key.
func (w *Watch) offer(u Update) {
	w.mu.Lock()
	if !w.ended {
		w.next, w.has = u, true
	}
	w.mu.Unlock()
	w.signal()
}

func (w *Watch) end(reason error) {
	w.mu.Lock()
	if !w.ended {
		w.ended, w.reason = true, reason
		w.endedByBroker.Store(reason != nil)
	}
	w.mu.Unlock()
	w.signal()
}

// signal wakes the reader; a signal already waiting covers this one too.
func (w *Watch) signal() {
	if w.notify != nil {
		w.notify()
		return
	}
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// sameState reports whether a and b tell watchers the same: token, state
// and error.
func sameState(a, b Update) bool {
	return a.Token == b.Token && a.Status.State == b.Status.State && errText(a.Status.LastError) == errText(b.Status.LastError)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
