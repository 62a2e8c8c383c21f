package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// entry is one key: a tenant and a normalized scope set. Its mutex guards
// every field below it.
type entry struct {
	b         *Broker
	t         *tenant
	scopes    []string // nil for the tenant's default scopes
	isDefault bool
	owner     string // who created it (WithOwner), for the fair share

	mu        sync.Mutex
	tok       *Token    // latest token, possibly expired
	lastErr   error     // last fetch error; nil after a success
	retryAt   time.Time // after a failure, the backoff timer's next attempt
	hold      time.Time // no request at all before this (Retry-After)
	permanent bool      // lastErr is permanent (invalid_client…)
	noAnswer  bool      // the last attempt got no answer in FetchTimeout
	lastStart time.Time // when the last request started
	forcedAt  time.Time // when Invalidate last forced a request
	next      time.Time // when the timer fires
	bo        *backoff.ExponentialBackOff
	inflight  *call
	timer     clockwork.Timer
	subs      map[*Watch]struct{}
	lastUsed  time.Time
	dead      error // why the entry was dropped; nil while live
	serving   bool  // last health reported for a default entry
	sent      published
}

// call is one shared identity-provider request.
type call struct {
	done chan struct{}
	tok  *Token
	err  error
}

// published is what subscribers last received, to skip repeats.
type published struct {
	version uint64
	state   State
	errText string
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
	return e.tok != nil && e.tok.ValidFor(now, minValid)
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
	if e.tok != nil && d > e.tok.lifetime() {
		// Even a fresh token would not do: answer from what the identity
		// provider granted last, without a request. A scheduled refresh
		// updates that knowledge.
		err := &TooShortLivedError{Lifetime: e.tok.lifetime(), MinValid: d}
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
		// The identity provider did not answer last time: do not make this
		// caller wait out the fetch timeout again; the attempt goes on for
		// the next caller.
		err := e.lastErr
		e.mu.Unlock()
		return nil, err
	}
	e.mu.Unlock()
	return e.await(ctx, c, want)
}

func (e *entry) await(ctx context.Context, c *call, want minValid) (*Token, error) {
	select {
	case <-c.done:
	case <-ctx.Done():
		select {
		case <-c.done: // the answer arrived too: it wins
		default:
			return nil, ctx.Err()
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	if d := want.resolve(c.tok); !c.tok.ValidFor(e.b.clock.Now(), d) {
		return nil, &TooShortLivedError{Lifetime: c.tok.lifetime(), MinValid: d}
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
		if now.Sub(e.forcedAt) < ForcedRefreshInterval || now.Before(e.hold) {
			// Rate limited: one caller must not drive the identity
			// provider. Serve the current token.
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

// retryPermanent retries at once a key whose last request failed
// permanently, e.g. after a reload.
func (e *entry) retryPermanent() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.permanent && e.dead == nil && e.inflight == nil {
		e.startLocked()
	}
}

// startLocked starts the shared request for the key on the broker's own
// context, so no caller's cancellation fails it for the others.
func (e *entry) startLocked() *call {
	c := &call{done: make(chan struct{})}
	b := e.b
	b.life.RLock()
	defer b.life.RUnlock()
	if b.closed {
		c.err = ErrClosed
		close(c.done)
		return c
	}
	e.inflight = c
	e.lastStart = b.clock.Now()
	e.stopTimerLocked()
	b.wg.Add(1)
	go e.run(c)
	return c
}

func (e *entry) run(c *call) {
	b := e.b
	defer b.wg.Done()
	ctx, cancel := context.WithTimeout(b.base, b.cfg.FetchTimeout)
	start := b.clock.Now()
	g, err := e.t.fetcher.Fetch(ctx, e.requestScopes())
	noAnswer := err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	if noAnswer {
		err = noAnswerError(err, b.cfg.FetchTimeout)
	}

	e.mu.Lock()
	defer close(c.done) // after the unlock below: waiters see the new state
	defer e.mu.Unlock()
	e.inflight = nil
	now := b.clock.Now()
	if e.dead != nil {
		c.err = e.dead
		return
	}
	var tok *Token
	if err == nil {
		tok, err = e.succeededLocked(start, now, g)
	}
	if err != nil {
		c.err = e.failedLocked(now, err, noAnswer)
	} else {
		c.tok = tok
	}
	e.publishLocked(now)
}

// noAnswerError replaces the context error of a request that ran out of
// FetchTimeout: it is the identity provider's failure, not a caller's
// deadline, and must not look like one (a caller would see
// DEADLINE_EXCEEDED instead of UNAVAILABLE).
func noAnswerError(err error, timeout time.Duration) error {
	reason := fmt.Errorf("no answer within %s", timeout)
	var ue *upstream.Error
	if errors.As(err, &ue) {
		cp := *ue
		cp.Err = reason
		return &cp
	}
	return fmt.Errorf("broker: identity provider request failed: %w", reason)
}

func (e *entry) succeededLocked(start, now time.Time, g upstream.Grant) (*Token, error) {
	log := e.b.log.With("tenant", e.t.spec.Name, "scopes", e.requestScopes())
	expiry, source, err := tokenExpiry(log, start, now, g)
	if err != nil {
		return nil, err
	}
	tok := &Token{
		AccessToken: g.AccessToken,
		TokenType:   g.TokenType,
		Expiry:      expiry,
		IssuedAt:    now,
		Scopes:      e.requestScopes(),
		Tenant:      e.t.spec.Name,
		Version:     e.b.version.Add(1),
	}
	if tok.TokenType == "" {
		tok.TokenType = "Bearer"
	}
	tok.sha256 = Fingerprint(tok.AccessToken)
	e.tok, e.lastErr = tok, nil
	e.permanent, e.noAnswer = false, false
	e.bo.Reset()
	e.retryAt, e.hold = time.Time{}, time.Time{}
	e.scheduleLocked(now, refreshAt(start, expiry.Sub(start)))
	log.Info("token issued", "version", tok.Version, "expiry", tok.Expiry, "expiry_source", source,
		"fingerprint", tok.sha256[:12], "next_refresh", e.next)
	return tok, nil
}

func (e *entry) failedLocked(now time.Time, err error, noAnswer bool) error {
	if errors.Is(err, context.Canceled) && e.b.isClosed() {
		return ErrClosed
	}
	delay := e.bo.NextBackOff()
	e.permanent, e.noAnswer, e.hold = false, noAnswer, time.Time{}
	var ue *upstream.Error
	if errors.As(err, &ue) {
		if ue.Permanent {
			delay = permanentRetry
			e.permanent = true
		}
		if ue.RetryAfter > delay {
			delay = min(ue.RetryAfter, maxRetryAfter)
			e.hold = now.Add(delay)
		}
	}
	err = fmt.Errorf("tenant %q: %w", e.t.spec.Name, err)
	e.lastErr = err
	e.retryAt = now.Add(delay)
	wake := e.retryAt
	if e.usableLocked(now, 0) && e.tok.Expiry.Before(wake) {
		wake = e.tok.Expiry // to report the stale token's expiry on time
	}
	e.scheduleLocked(now, wake)
	e.b.log.Warn("token request failed", "tenant", e.t.spec.Name, "scopes", e.requestScopes(),
		"state", e.stateLocked(now), "retry_in", delay, "error", err)
	return err
}

func (e *entry) scheduleLocked(now, at time.Time) {
	e.stopTimerLocked()
	e.next = at
	e.timer = e.b.clock.AfterFunc(at.Sub(now), e.onTimer)
}

func (e *entry) stopTimerLocked() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

// onTimer refreshes the key, drops it if idle, or re-evaluates a stale
// token's expiry.
func (e *entry) onTimer() {
	b := e.b
	b.life.RLock()
	if b.closed {
		b.life.RUnlock()
		return
	}
	b.wg.Add(1) // so that Close waits for a timer that fired just before it
	b.life.RUnlock()
	defer b.wg.Done()
	if e.b.evictIfIdle(e) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead != nil || e.inflight != nil {
		return
	}
	now := e.b.clock.Now()
	if now.Before(e.retryAt) {
		e.publishLocked(now)
		e.scheduleLocked(now, e.retryAt)
		return
	}
	e.startLocked()
}

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
	w.offer(e.snapshotLocked(now))
	if !e.usableLocked(now, 0) && e.inflight == nil && !now.Before(e.retryAt) {
		e.startLocked()
	}
	return w, nil
}

// Watch is a subscription to a key's updates. Updates are latest-wins: a
// slow reader skips intermediate states and never holds up the broker.
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

// Close unsubscribes. It is idempotent.
func (w *Watch) Close() {
	w.e.mu.Lock()
	delete(w.e.subs, w)
	w.e.lastUsed = w.e.b.clock.Now()
	w.e.mu.Unlock()
	w.end(nil)
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
