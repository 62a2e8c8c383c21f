package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/names"
)

// maxEvictedRetries bounds how often one call looks up a key again after
// finding it evicted (each retry creates it anew).
const maxEvictedRetries = 3

// withEntry runs f on the entry of a request, created for the owner in ctx
// if needed, and again on a new one if it was evicted meanwhile, so that
// callers never see an eviction they did not cause.
func withEntry[T any](b *Broker, ctx context.Context, tenantName string, scopes []string, f func(*entry) (T, error)) (T, error) {
	owner := ownerFrom(ctx)
	for i := 0; ; i++ {
		e, err := b.key(tenantName, scopes, owner)
		if err != nil {
			var zero T
			return zero, err
		}
		v, err := f(e)
		if i < maxEvictedRetries && errors.Is(err, ErrEvicted) {
			continue
		}
		return v, err
	}
}

// key resolves a request to its entry, creating it for owner if needed.
func (b *Broker) key(tenantName string, scopes []string, owner string) (*entry, error) {
	if err := names.ValidTenant(tenantName); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	scopes, err := names.NormalizeScopes(scopes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		return nil, ErrClosed
	}
	t := b.tenants[tenantName]
	if t == nil {
		return nil, fmt.Errorf("%w %q; ListTenants shows the configured tenants", ErrUnknownTenant, tenantName)
	}
	if len(scopes) == 0 || slices.Equal(scopes, t.spec.Scopes) {
		return t.def.touch(), nil
	}
	var buf [256]byte
	k := appendKey(buf[:0], scopes)
	if e := t.keys[string(k)]; e != nil { // string(k) here does not allocate
		// Touched under b.mu so that idle eviction cannot take it now.
		return e.touch(), nil
	}
	if err := b.allowNewSetLocked(owner); err != nil {
		return nil, err
	}
	if err := b.makeRoomLocked(t, owner); err != nil {
		return nil, err
	}
	// Cloned: NormalizeScopes may return the caller's own slice.
	return b.newEntryLocked(t, slices.Clone(scopes), owner), nil
}

// makeRoomLocked makes room for one more scope set of owner in tenant t,
// so that no owner can lock the others out. A named owner holds at most
// half of the tenant's non-default sets: past that its own least recently
// used set gives way, or the request is refused. In a full tenant, the
// least recently used set of the owner holding the most gives way. Watched
// sets, sets being fetched and default sets are never evicted.
func (b *Broker) makeRoomLocked(t *tenant, owner string) error {
	budget := b.cfg.Limits.MaxScopeSetsPerTenant - 1 // the default set is always there
	if share := max(1, budget/2); owner != "" && t.owned[owner] >= share {
		if !b.evictLRULocked(t, func(e *entry) bool { return e.owner == owner }) {
			return fmt.Errorf("%w: caller %q already holds %d of tenant %q's scope sets, its share; request fewer distinct scope sets",
				ErrTooManyScopeSets, owner, t.owned[owner], t.spec.Name)
		}
	}
	if 1+len(t.keys) >= b.cfg.Limits.MaxScopeSetsPerTenant { // the default counts
		owners := slices.SortedFunc(maps.Keys(t.owned), func(a, b string) int { return t.owned[b] - t.owned[a] }) // most first
		evicted := false
		for _, o := range owners {
			if evicted = b.evictLRULocked(t, func(e *entry) bool { return e.owner == o }); evicted {
				break
			}
		}
		if !evicted {
			return fmt.Errorf("%w: tenant %q already has %d in use; request fewer distinct scope sets",
				ErrTooManyScopeSets, t.spec.Name, b.cfg.Limits.MaxScopeSetsPerTenant)
		}
	}
	if b.nsets >= b.cfg.Limits.MaxScopeSets && !b.evictLRULocked(nil, nil) {
		return fmt.Errorf("%w: the broker already holds %d", ErrTooManyScopeSets, b.cfg.Limits.MaxScopeSets)
	}
	return nil
}

// appendKey appends the map key of a normalized scope set.
func appendKey(dst []byte, scopes []string) []byte {
	for i, s := range scopes {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, s...)
	}
	return dst
}

func (b *Broker) newEntryLocked(t *tenant, scopes []string, owner string) *entry {
	e := &entry{
		b: b, t: t, scopes: scopes, isDefault: scopes == nil, owner: owner,
		subs:     map[*Watch]struct{}{},
		lastUsed: b.clock.Now(),
		grace:    t.grace, // a scope set new since a credential change gets its grace too
	}
	if !e.isDefault {
		if t.keys == nil {
			t.keys, t.owned = map[string]*entry{}, map[string]int{}
		}
		t.keys[strings.Join(scopes, " ")] = e
		b.nsets++
		t.owned[owner]++
	}
	return e
}

// evictLRULocked drops the least recently used key that is not the
// default, not watched, not being fetched and matches match (nil: any), of
// tenant t or of any tenant when t is nil.
func (b *Broker) evictLRULocked(t *tenant, match func(*entry) bool) bool {
	var victim *entry
	var victimUsed time.Time
	consider := func(tt *tenant) {
		for _, e := range tt.keys {
			if e.isDefault || (match != nil && !match(e)) {
				continue
			}
			e.mu.Lock()
			ok := len(e.subs) == 0 && e.inflight == nil && (victim == nil || e.lastUsed.Before(victimUsed))
			if ok {
				victim, victimUsed = e, e.lastUsed
			}
			e.mu.Unlock()
		}
	}
	if t != nil {
		consider(t)
	} else {
		for _, tt := range b.tenants {
			consider(tt)
		}
	}
	if victim == nil {
		return false
	}
	b.removeEntryLocked(victim, ErrEvicted)
	return true
}

func (b *Broker) removeEntryLocked(e *entry, reason error) {
	t := e.t
	delete(t.keys, strings.Join(e.scopes, " "))
	b.nsets--
	if t.owned[e.owner]--; t.owned[e.owner] <= 0 {
		delete(t.owned, e.owner)
	}
	if len(t.keys) == 0 {
		t.keys, t.owned = nil, nil // give their memory back
	}
	e.drop(reason)
	b.log.Debug("scope set dropped", "tenant", e.t.spec.Name, "scopes", e.scopes)
}

// evictIfIdle drops e if nobody used or watched it for IdleTimeout.
func (b *Broker) evictIfIdle(e *entry) bool {
	if e.isDefault {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e.mu.Lock()
	idle := e.dead == nil && len(e.subs) == 0 && b.clock.Since(e.lastUsed) >= b.cfg.IdleTimeout
	e.mu.Unlock()
	if idle && e.t.keys[strings.Join(e.scopes, " ")] == e {
		b.removeEntryLocked(e, ErrEvicted)
		return true
	}
	return false
}
