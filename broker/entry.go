package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"
)

// entry is one key: a tenant and a normalized scope set. Its mutex guards
// every field below it.
type entry struct {
	b         *Broker
	t         *tenant
	scopes    []string // nil for the tenant's default scopes
	owner     string   // who created it (WithOwner), for the fair share
	isDefault bool     // beside mu, which needs only 4-byte alignment

	mu        sync.Mutex
	tok       *Token                      // latest token, possibly expired
	lastErr   error                       // last fetch error; nil after a success
	retryAt   time.Time                   // after a failure, the backoff timer's next attempt
	hold      time.Time                   // no request at all before this (Retry-After)
	grace     time.Time                   // until then invalid_client is retried soon (CredentialGrace)
	permanent bool                        // lastErr is permanent (invalid_client…)
	noAnswer  bool                        // the last attempt got no answer within its timeout
	serving   bool                        // last health reported for a default entry
	lastStart time.Time                   // when the last request started
	forcedAt  time.Time                   // when Invalidate last forced a request
	reloadAt  time.Time                   // when a reload last retried a permanent failure
	next      time.Time                   // when the timer fires
	bo        *backoff.ExponentialBackOff // nil until a failure
	inflight  *call
	timer     clockwork.Timer
	subs      map[*Watch]struct{}
	lastUsed  time.Time
	dead      error                         // why the entry was dropped; nil while live
	pub       Update                        // last offered to the watchers, for a new watcher of the same state
	lifetimes [lifetimeMemory]time.Duration // of the key's latest tokens, newest first
}

// call is one shared identity-provider request.
type call struct {
	done    chan struct{}
	gone    chan struct{} // closed by release, freeing every waiter with why
	why     error
	tok     *Token
	err     error
	longest time.Duration // the key's longest recent lifetime when tok arrived
	// deadline is when callers stop waiting (real time): the attempt's
	// timeout from its start, however long it is queued.
	deadline time.Time
	timeout  time.Duration
}

// release frees the call's waiters with why (e.mu held), unless the
// call was already released.
func (c *call) release(why error) {
	select {
	case <-c.gone:
	default:
		c.why = why
		close(c.gone)
	}
}

// minValid is a request's min_valid: exact when set, else the default
// rule for the token's lifetime.
type minValid struct {
	d   time.Duration
	set bool
}

func (m minValid) resolve(tok *Token) time.Duration {
	if m.set {
		return m.d
	}
	if tok == nil {
		return DefaultMinValid
	}
	return DefaultMinValidFor(tok.lifetime())
}

// requestScopes are the scopes sent to the identity provider.
func (e *entry) requestScopes() []string {
	if e.isDefault {
		return e.t.spec.Scopes
	}
	return e.scopes
}

func (e *entry) usableLocked(now time.Time, minValid time.Duration) bool {
	return e.tok != nil && e.tok.validFor(now, minValid)
}

func (e *entry) stateLocked(now time.Time) State {
	valid := e.usableLocked(now, 0)
	switch {
	case valid && e.lastErr == nil:
		return StateReady
	case valid:
		return StateStale
	case e.lastErr != nil:
		return StateFailing
	}
	return StatePending
}

func (e *entry) snapshotLocked(now time.Time) Update {
	u := Update{Status: Status{State: e.stateLocked(now), LastError: e.lastErr, NextRefresh: e.next}}
	if e.usableLocked(now, 0) {
		u.Token = e.tok
	}
	return u
}

func (e *entry) touch() *entry {
	e.mu.Lock()
	e.lastUsed = e.b.clock.Now()
	e.mu.Unlock()
	return e
}

func (e *entry) snapshot() Update {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.snapshotLocked(e.b.clock.Now())
}

// earlyRetryLocked reports whether a caller may start an attempt before
// the backoff timer: at most every CallerRetryInterval, never during a
// Retry-After, never after a permanent error (a reload retries those).
func (e *entry) earlyRetryLocked(now time.Time) bool {
	return !e.permanent && !now.Before(e.hold) && now.Sub(e.lastStart) >= CallerRetryInterval
}

// nextAttemptLocked is when the key's next request is due: the backoff
// timer's, or for a key whose watchers have no valid token, the earliest
// early attempt (its watchers are demand, as a caller's request is).
func (e *entry) nextAttemptLocked(now time.Time) time.Time {
	at := e.retryAt
	if len(e.subs) > 0 && !e.permanent && !e.usableLocked(now, 0) {
		if early := latest(e.lastStart.Add(CallerRetryInterval), e.hold); early.Before(at) {
			at = early
		}
	}
	return at
}

// longestLocked is the longest lifetime of the key's recent tokens.
func (e *entry) longestLocked() time.Duration {
	return slices.Max(e.lifetimes[:])
}

// tooShortLocked refuses a minimum validity that none of the key's
// recent tokens had: a fresh token would not meet it either.
func (e *entry) tooShortLocked(d time.Duration) error {
	if longest := e.longestLocked(); d > longest {
		return &TooShortLivedError{Lifetime: longest, MinValid: d}
	}
	return nil
}

func (e *entry) get(ctx context.Context, want minValid) (*Token, error) {
	e.mu.Lock()
	now := e.b.clock.Now()
	e.lastUsed = now
	d := want.resolve(e.tok)
	if e.usableLocked(now, d) {
		tok := e.tok
		e.mu.Unlock()
		return tok, nil
	}
	if e.dead != nil {
		err := e.dead
		e.mu.Unlock()
		return nil, err
	}
	if err := e.shortLivedLocked(now, d); err != nil {
		e.mu.Unlock()
		return nil, err
	}
	c := e.inflight
	if c == nil {
		if e.lastErr != nil && now.Before(e.retryAt) && !e.earlyRetryLocked(now) {
			// Backing off: answer with the last failure instead of adding
			// load on an identity provider that is already failing.
			err := e.lastErr
			e.mu.Unlock()
			return nil, err
		}
		c = e.startLocked()
	}
	if e.lastErr != nil && e.noAnswer {
		// The IdP did not answer last time: this caller does not wait out
		// the timeout again; the attempt goes on for the next one.
		err := e.lastErr
		e.mu.Unlock()
		return nil, err
	}
	e.mu.Unlock()
	return e.await(ctx, c, want)
}

// shortLivedLocked answers a minimum validity d longer than the cached
// token's lifetime: TooShortLivedError when no recent token lived that
// long, ErrShortLivedToken when a request started within
// CallerRetryInterval, else nil (the caller fetches).
func (e *entry) shortLivedLocked(now time.Time, d time.Duration) error {
	if e.tok == nil || d <= e.tok.lifetime() {
		return nil
	}
	if err := e.tooShortLocked(d); err != nil {
		return err
	}
	if e.inflight == nil && now.Sub(e.lastStart) < CallerRetryInterval {
		return shortLivedError(e.tok.lifetime(), d, e.longestLocked())
	}
	return nil
}

func shortLivedError(lifetime, d, longest time.Duration) error {
	return fmt.Errorf("%w (valid for %s, min_valid %s; recent tokens lived up to %s)",
		ErrShortLivedToken, readable(lifetime), readable(d), readable(longest))
}

// drop ends the entry for reason: no more refreshes, its watches end, and
// the callers waiting for its request are released at once.
func (e *entry) drop(reason error) {
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
	if c := e.inflight; c != nil {
		c.release(reason)
	}
}

func (e *entry) await(ctx context.Context, c *call, want minValid) (*Token, error) {
	bound := time.NewTimer(time.Until(c.deadline))
	defer bound.Stop()
	var err error
	select {
	case <-c.done:
	case <-bound.C: // queued or slow: the request goes on for the next caller
		err = noAnswerError(nil, c.timeout)
	case <-c.gone:
		err = c.why
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		select {
		case <-c.done: // the answer arrived too: it wins
		default:
			return nil, err
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	if d := want.resolve(c.tok); !c.tok.validFor(e.b.clock.Now(), d) {
		if d > c.longest {
			return nil, &TooShortLivedError{Lifetime: c.longest, MinValid: d}
		}
		return nil, shortLivedError(c.tok.lifetime(), d, c.longest)
	}
	return c.tok, nil
}

func (e *entry) invalidate(ctx context.Context, sha string) (*Token, error) {
	e.mu.Lock()
	now := e.b.clock.Now()
	e.lastUsed = now
	if e.tok == nil || e.tok.SHA256() != sha || e.dead != nil {
		// Already replaced: serve the current token.
		e.mu.Unlock()
		return e.get(ctx, minValid{})
	}
	c := e.inflight
	if c == nil {
		if now.Sub(e.forcedAt) < ForcedRefreshInterval || now.Before(e.hold) || e.permanent {
			// One caller must not drive the IdP, nor retry credentials it
			// rejected for good: serve the current token.
			e.mu.Unlock()
			return e.get(ctx, minValid{})
		}
		e.forcedAt = now
		e.b.log.Info("token rejected by a resource server; fetching a new one", "tenant", e.t.spec.Name,
			"scopes", e.scopes, "version", e.tok.Version, "fingerprint", sha[:12])
		c = e.startLocked()
	}
	e.mu.Unlock()
	return e.await(ctx, c, minValid{set: true})
}
