package clientlib

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// newBackoff returns the reconnect backoff: doubling, each delay ±50 %, so
// that the clients of a restarted broker do not reconnect in lockstep.
func newBackoff(cfg sourceConfig) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     cfg.backoffInitial,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         cfg.backoffMax,
	}
	b.Reset()
	return b
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
