package clientlib

import (
	"context"
	"fmt"
	"time"
)

// run keeps a WatchToken stream open until the Source stops, reconnecting
// with backoff, and falls back to GetToken while it is down.
func (s *Source) run() {
	defer s.wg.Done()
	bo := newBackoff(s.cfg)
	for {
		received, err := s.watchOnce()
		if s.ctx.Err() != nil {
			return
		}
		if received {
			bo.Reset()
		}
		s.mu.Lock()
		err = s.failLocked("WatchToken", err)
		stopped := s.state.Load().err != nil
		var c *call
		if !stopped && s.dueLocked(time.Now()) {
			c = s.startFetchLocked()
		}
		s.mu.Unlock()
		if stopped {
			return
		}
		s.log.Warn("token watch interrupted; reconnecting", "error", err)
		if c != nil {
			select {
			case <-c.done:
			case <-s.ctx.Done():
				return
			}
		}
		if !sleep(s.ctx, bo.NextBackOff()) {
			return
		}
	}
}

// watchOnce reads one watch stream until it ends, and reports whether it
// delivered any message.
func (s *Source) watchOnce() (received bool, err error) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	st, err := s.be.watch(ctx)
	if err != nil {
		return false, err
	}
	defer st.close()
	for {
		u, err := st.recv()
		if err != nil {
			return received, err
		}
		received = true
		s.apply(u)
	}
}

// apply adopts one message of the watch stream.
func (s *Source) apply(u update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.tok != nil {
		s.adoptLocked(newToken(*u.tok, s.cfg.minValid, time.Now()), true)
		return
	}
	if u.lastErr != "" {
		s.lastErr = fmt.Errorf("broker reports %s: %s", u.state, u.lastErr)
	}
	if u.failing && s.state.Load().tok == nil {
		// Ask, to learn whether waiting will cure it; this may end NewSource.
		s.startFetchLocked()
	}
}

// dueLocked reports whether the Source should ask for a newer token.
func (s *Source) dueLocked(now time.Time) bool {
	t := s.state.Load().tok
	return t == nil || !now.Before(t.refreshAt) || !now.Before(t.freshUntil)
}
