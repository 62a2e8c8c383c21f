package clientlib

import (
	"context"
	"fmt"
	"time"
)

// call is one shared GetToken or InvalidateToken call: every caller that
// wants the same thing waits for the one call in flight.
type call struct {
	done chan struct{}
	tok  *token
	err  error
}

func newCall() *call { return &call{done: make(chan struct{})} }

// failedCall returns a call that has already failed with err.
func failedCall(err error) *call {
	c := newCall()
	c.finish(nil, err)
	return c
}

func (c *call) finish(t *token, err error) {
	c.tok, c.err = t, err
	close(c.done)
}

// goShared runs do as a shared call of op on the Source's context (no
// caller's cancellation fails it for the others) and adopts its token;
// forgetLocked runs under mu, after without it. The caller holds mu.
func (s *Source) goShared(op string, do func(context.Context) (rawToken, error), forgetLocked func(), after func(*token, error)) *call {
	c := newCall()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.rpcTimeout)
		raw, err := do(ctx)
		cancel()
		var t *token
		s.mu.Lock()
		forgetLocked()
		if err == nil {
			t = newToken(raw, s.cfg.minValid, time.Now())
			s.adoptLocked(t, false)
		} else {
			err = s.failLocked(op, err)
		}
		s.mu.Unlock()
		c.finish(t, err)
		if after != nil {
			after(t, err)
		}
	}()
	return c
}

// fetch is current's slow path: it joins or starts the shared GetToken
// call and waits at most for ctx.
func (s *Source) fetch(ctx context.Context) (*token, error) {
	s.mu.Lock()
	c := s.startFetchLocked()
	s.mu.Unlock()
	done := false
	select {
	case <-c.done:
		done = true
	case <-ctx.Done():
	}
	st := s.state.Load()
	switch {
	case st.err != nil:
		return nil, st.err
	case done && c.err == nil:
		return c.tok, nil
	case st.tok != nil && st.tok.valid(time.Now()):
		// The broker cannot give a fresher token, but this one still works.
		return st.tok, nil
	case !done:
		return nil, s.noTokenError(ctx.Err())
	}
	return nil, c.err
}

// startFetchLocked starts the shared GetToken call, or joins the one in
// flight.
func (s *Source) startFetchLocked() *call {
	if s.fetching != nil {
		return s.fetching
	}
	if s.closed {
		return failedCall(ErrClosed)
	}
	// At most half the tokens' lifetime: the broker refuses more.
	minValid := s.cfg.minValid
	if t := s.state.Load().tok; t != nil && t.lifetime/2 > 0 {
		minValid = min(minValid, t.lifetime/2)
	}
	s.fetching = s.goShared("GetToken",
		func(ctx context.Context) (rawToken, error) { return s.be.getToken(ctx, minValid) },
		func() { s.fetching = nil }, nil)
	return s.fetching
}

// invalidate reports the token with fingerprint sha as rejected and returns
// its replacement: the current token, or the shared InvalidateToken call's.
func (s *Source) invalidate(ctx context.Context, sha string) (*token, error) {
	s.mu.Lock()
	st := s.state.Load()
	if st.err != nil {
		s.mu.Unlock()
		return nil, st.err
	}
	s.rejectLocked(sha)
	if cur := st.tok; cur != nil && cur.sha256 != sha && cur.valid(time.Now()) && !s.isRejectedLocked(cur.sha256) {
		s.mu.Unlock()
		return cur, nil // already replaced
	}
	c := s.invalidating[sha]
	switch {
	case c != nil:
	case s.closed:
		c = failedCall(ErrClosed)
	default:
		c = s.goShared("InvalidateToken",
			func(ctx context.Context) (rawToken, error) { return s.be.invalidate(ctx, sha) },
			func() { delete(s.invalidating, sha) },
			func(t *token, err error) { s.logInvalidated(sha, t, err) })
		s.invalidating[sha] = c
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.tok, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("clientlib: tenant %q: waiting for a replacement token: %w", s.tenant, ctx.Err())
	}
}

func (s *Source) logInvalidated(sha string, t *token, err error) {
	if err != nil {
		s.log.Warn("token rejected by a resource server; no replacement", "rejected", shortFP(sha), "error", err)
		return
	}
	s.log.Info("token rejected by a resource server; replaced", "rejected", shortFP(sha), "replacement", shortFP(t.sha256))
}

// shortFP is the prefix of a fingerprint that names a token in logs.
func shortFP(sha string) string { return sha[:min(len(sha), 12)] }
