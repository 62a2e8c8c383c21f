package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// retryPermanent retries a permanently failed key after a reload: at
// once, but at most once per ReloadRetryInterval and never during a
// Retry-After; else at the earliest time allowed, if sooner than planned.
func (e *entry) retryPermanent() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.permanent || e.dead != nil || e.inflight != nil {
		return
	}
	now := e.b.clock.Now()
	at := e.hold
	if !e.reloadAt.IsZero() {
		at = latest(at, e.reloadAt.Add(ReloadRetryInterval))
	}
	if !now.Before(at) {
		e.reloadAt = now
		e.startLocked()
		return
	}
	if at.Before(e.retryAt) {
		e.retryAt = at
		if e.timer == nil || at.Before(e.next) { // else the timer moves on to retryAt
			e.scheduleLocked(now, at)
		}
		e.b.log.Debug("reload: permanently failed key retried at most every "+ReloadRetryInterval.String(),
			"tenant", e.t.spec.Name, "scopes", e.requestScopes(), "retry_in", at.Sub(now))
	}
}

// rotate moves the key to its tenant's new credentials (SetTenants): the
// cached token keeps serving; a request in flight is superseded (its
// waiters get ErrTenantChanged); the new credentials are tried at once, or
// after a Retry-After, with the CredentialGrace.
func (e *entry) rotate() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead != nil {
		return
	}
	now := e.b.clock.Now()
	if c := e.inflight; c != nil {
		c.release(ErrTenantChanged)
		e.inflight = nil
	}
	e.bo, e.permanent, e.noAnswer, e.reloadAt = nil, false, false, time.Time{}
	e.grace = latest(now, e.hold).Add(CredentialGrace)
	if now.Before(e.hold) {
		e.retryAt = e.hold
		e.scheduleLocked(now, e.hold)
		return
	}
	e.startLocked()
}

// demandLocked starts the attempt that a new watcher of a key without a
// valid token asks for, or schedules it (nextAttemptLocked).
func (e *entry) demandLocked(now time.Time) {
	at := e.nextAttemptLocked(now)
	if !now.Before(at) {
		e.startLocked()
		return
	}
	if e.timer == nil || at.Before(e.next) {
		e.scheduleLocked(now, at)
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// startLocked starts the shared request for the key on the broker's own
// context, so no caller's cancellation fails it for the others.
func (e *entry) startLocked() *call {
	c := &call{done: make(chan struct{}), gone: make(chan struct{})}
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
	timeout := e.attemptTimeoutLocked()
	now := time.Now()
	c.deadline, c.timeout = now.Add(timeout), timeout
	e.t.queue.Add(struct{}{}, queuedFetch{e: e, c: c, timeout: timeout, until: now.Add(queueWait(timeout))})
	return c
}

// attemptTimeoutLocked bounds one request of the key: FetchTimeout, or a
// sixth of its tokens' lifetime if shorter, so that one hung request
// leaves room for more attempts before expiry; and not past the cached
// token's expiry, so that watchers and health learn of it on time (both at
// least MinAttemptTimeout).
func (e *entry) attemptTimeoutLocked() time.Duration {
	d := e.b.cfg.FetchTimeout
	if e.tok != nil {
		d = min(d, max(MinAttemptTimeout, e.tok.lifetime()/6))
		if left := e.tok.Expiry.Sub(e.b.clock.Now()); left > 0 {
			d = min(d, max(MinAttemptTimeout, left))
		}
	}
	return d
}

// run makes the request of call c (queued by startLocked) and publishes
// its outcome.
func (e *entry) run(c *call, until time.Time, timeout time.Duration) {
	b := e.b
	defer b.wg.Done()
	start := b.clock.Now()
	g, noAnswer, err := e.fetch(c, until, timeout)

	e.mu.Lock()
	defer close(c.done) // after the unlock below: waiters see the new state
	defer e.mu.Unlock()
	now := b.clock.Now()
	superseded := e.inflight != c // by a credential change (rotate)
	if !superseded {
		e.inflight = nil
	}
	switch {
	case e.dead != nil:
		c.err = e.dead
		return
	case superseded:
		c.err = ErrTenantChanged
		return
	}
	var tok *Token
	if err == nil {
		tok, err = e.succeededLocked(start, now, g)
	}
	if err != nil {
		c.err = e.failedLocked(now, err, noAnswer)
	} else {
		c.tok, c.longest = tok, e.longestLocked()
	}
	e.publishLocked(now)
}

// fetch sends c's request with the attempt's timeout (real time: it bounds
// a network request), unless c was dropped or superseded while queued, or
// waited in the queue past until. noAnswer reports that the IdP did not
// answer in time.
func (e *entry) fetch(c *call, until time.Time, timeout time.Duration) (g upstream.Grant, noAnswer bool, err error) {
	e.mu.Lock()
	live := e.dead == nil && e.inflight == c
	e.mu.Unlock()
	began := time.Now()
	switch {
	case !live: // run reports why
		return g, false, nil
	case began.After(until): // waited behind a hung host: not sent
		return g, true, fmt.Errorf("broker: identity provider request not sent: no free connection to its host within %s (limits.max_idp_requests_per_host)", readable(began.Sub(until)+queueWait(timeout)))
	}
	ctx, cancel := context.WithTimeout(e.b.base, timeout)
	defer cancel()
	g, err = (*e.t.fetcher.Load()).Fetch(ctx, e.requestScopes())
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return g, true, noAnswerError(err, timeout)
	case isTimeout(err): // an HTTP client's own, shorter timeout
		return g, true, noAnswerError(err, time.Since(began))
	}
	return g, false, err
}

// isTimeout reports a request that an HTTP client's own timeout ended.
func isTimeout(err error) bool {
	var te *upstream.TransportError
	return errors.As(err, &te) && te.Timeout()
}

// noAnswerError replaces the error of a request that ran out of time: it
// is the IdP's failure, not a caller's deadline (UNAVAILABLE, not
// DEADLINE_EXCEEDED), reported in the same words on every path.
func noAnswerError(err error, timeout time.Duration) error {
	reason := fmt.Errorf("no answer within %s", readable(timeout))
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
	e.bo = nil // a fresh backoff after the next failure
	e.retryAt, e.hold, e.grace = time.Time{}, time.Time{}, time.Time{}
	copy(e.lifetimes[1:], e.lifetimes[:])
	e.lifetimes[0] = tok.lifetime()
	e.scheduleLocked(now, refreshAt(start, expiry.Sub(start)))
	log.Info("token issued", "version", tok.Version, "expiry", tok.Expiry, "expiry_source", source,
		"fingerprint", tok.sha256[:12], "next_refresh", e.next)
	return tok, nil
}

func (e *entry) failedLocked(now time.Time, err error, noAnswer bool) error {
	if errors.Is(err, context.Canceled) && e.b.isClosed() {
		return ErrClosed
	}
	if e.bo == nil { // made on the first failure: most keys never fail
		e.bo = &backoff.ExponentialBackOff{
			InitialInterval: time.Second, RandomizationFactor: 0.2,
			Multiplier: 2, MaxInterval: 2 * time.Minute,
		}
		e.bo.Reset()
	}
	delay := e.bo.NextBackOff()
	worked := e.tok != nil && e.lastErr == nil // the credentials got the last token
	e.permanent, e.noAnswer, e.hold = false, noAnswer, time.Time{}
	if worked && e.grace.IsZero() {
		// An IdP that restarted between two refreshes may not know the
		// credentials yet.
		e.grace = now.Add(CredentialGrace)
	}
	inGrace := now.Before(e.grace)
	if noAnswer || unreachable(err) { // the IdP may be restarting
		e.grace = now.Add(CredentialGrace)
	}
	if ue, ok := errors.AsType[*upstream.Error](err); ok {
		delay, err = e.answeredLocked(now, err, ue, delay, inGrace)
	}
	err = fmt.Errorf("tenant %q: %w", e.t.spec.Name, err)
	e.lastErr = err
	e.retryAt = now.Add(delay)
	at := e.nextAttemptLocked(now)
	wake := at
	if e.usableLocked(now, 0) && e.tok.Expiry.Before(wake) {
		wake = e.tok.Expiry // to report the stale token's expiry on time
	}
	e.scheduleLocked(now, wake)
	e.b.log.Warn("token request failed", "tenant", e.t.spec.Name, "scopes", e.requestScopes(),
		"state", e.stateLocked(now), "retry_in", at.Sub(now), "error", err)
	return err
}

// answeredLocked applies the IdP's error ue (within err) to the key's next
// attempt, planned after delay: a permanent error waits permanentRetry, or
// a few seconds within the credential grace; a Retry-After holds every
// attempt. It returns the delay and the error to report.
func (e *entry) answeredLocked(now time.Time, err error, ue *upstream.Error, delay time.Duration, inGrace bool) (time.Duration, error) {
	switch {
	case ue.Permanent && inGrace && credentialRejected(ue):
		// Not permanent yet, for callers either (UNAVAILABLE, not
		// FAILED_PRECONDITION).
		delay = min(delay, jitter(CredentialGraceRetryMax*4/5, CredentialGraceRetryMax*6/5))
		cp := *ue
		cp.Permanent = false
		ue = &cp
		err = fmt.Errorf("%w (retried every few seconds until %s: the credentials are new, worked until now, or the identity provider was unreachable just before)",
			ue, e.grace.UTC().Format(time.RFC3339))
	case ue.Permanent:
		delay = permanentRetry
		e.permanent = true
	}
	if ue.RetryAfter > 0 { // binds early attempts, invalidations and reloads too
		e.hold = now.Add(min(ue.RetryAfter, maxRetryAfter))
		delay = max(delay, e.hold.Sub(now))
	}
	if ue.RetryAfter > maxRetryAfter && err == error(ue) {
		// Say the wait that applies, not the one the IdP asked for.
		cp := *ue
		cp.RetryAfter = maxRetryAfter
		err = fmt.Errorf("%w (the identity provider asked for %s; the broker waits at most %s)", &cp, readable(ue.RetryAfter), maxRetryAfter)
	}
	return delay, err
}

// unreachable reports a request that got no HTTP answer, or a 5xx.
func unreachable(err error) bool {
	var ue *upstream.Error
	return errors.As(err, &ue) && (ue.StatusCode == 0 && ue.Code == "" || ue.StatusCode >= 500)
}

// credentialRejected reports an answer that rejects the client's
// credentials, which a credential change or an IdP restart may explain.
func credentialRejected(ue *upstream.Error) bool {
	return ue.Code == "invalid_client" || ue.Code == "unauthorized_client"
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
	if at := e.nextAttemptLocked(now); now.Before(at) {
		e.publishLocked(now)
		e.scheduleLocked(now, at)
		return
	}
	e.startLocked()
}

// jitter returns a random duration in [lo, hi).
func jitter(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// refreshAt picks when to refresh a token: at 50–80 % of its lifetime or,
// where refreshLead before expiry comes sooner, in the last fifth before
// that point, so that keys issued together do not stay in step.
func refreshAt(issued time.Time, lifetime time.Duration) time.Time {
	latest := lifetime - refreshLead(lifetime)
	return issued.Add(min(jitter(lifetime/2, lifetime*4/5), jitter(latest*4/5, latest)))
}

// refreshLead is how long before expiry a refresh starts at the latest:
// a quarter of the lifetime or refreshFloor, whichever is longer, and at
// most half the lifetime: with the default min_valid (a tenth of the
// lifetime), at least 15 % of it is left for retries.
func refreshLead(lifetime time.Duration) time.Duration {
	return min(lifetime/2, max(lifetime/4, refreshFloor))
}
