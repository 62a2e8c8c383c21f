package broker

import (
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// maxOwnerBuckets bounds the per-owner buckets of new scope sets; past it,
// full buckets, as good as new, are dropped.
const maxOwnerBuckets = 1 << 14

// allowNewSetLocked takes one token from owner's bucket of new scope sets:
// each costs an IdP request, so a caller cycling through scope sets must
// not set the IdP's request rate. The embedding program (no owner) is not
// limited. b.mu must be held.
func (b *Broker) allowNewSetLocked(owner string) error {
	if owner == "" || b.cfg.Limits.NewScopeSetsPerSecond < 0 {
		return nil
	}
	now := b.clock.Now()
	lim := b.newSets[owner]
	if lim == nil {
		if len(b.newSets) >= maxOwnerBuckets {
			b.pruneOwnerBucketsLocked(now)
		}
		if len(b.newSets) >= maxOwnerBuckets {
			return fmt.Errorf("%w: %d owners are creating scope sets", ErrNewScopeSetsTooFast, len(b.newSets))
		}
		if b.newSets == nil {
			b.newSets = map[string]*rate.Limiter{}
		}
		lim = rate.NewLimiter(rate.Limit(b.cfg.Limits.NewScopeSetsPerSecond), b.cfg.Limits.NewScopeSetBurst)
		b.newSets[owner] = lim
	}
	if !lim.AllowN(now, 1) {
		return fmt.Errorf("%w (caller %q: at most %g new scope sets per second, burst %d)",
			ErrNewScopeSetsTooFast, owner, b.cfg.Limits.NewScopeSetsPerSecond, b.cfg.Limits.NewScopeSetBurst)
	}
	return nil
}

// pruneOwnerBucketsLocked drops the buckets that have refilled: a new
// bucket would be the same.
func (b *Broker) pruneOwnerBucketsLocked(now time.Time) {
	for o, lim := range b.newSets {
		if lim.TokensAt(now) >= float64(lim.Burst()) {
			delete(b.newSets, o)
		}
	}
}
