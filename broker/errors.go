package broker

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrUnknownTenant: no tenant of that name is configured.
	ErrUnknownTenant = errors.New("broker: unknown tenant")
	// ErrTenantRemoved ends a watch whose tenant was removed.
	ErrTenantRemoved = errors.New("broker: tenant removed")
	// ErrTenantChanged ends a watch whose tenant's identity changed (see
	// SetTenants); watching again serves the new configuration. It also
	// releases the callers waiting for a request that a credential change
	// superseded; asking again joins the new credentials' request.
	ErrTenantChanged = errors.New("broker: tenant reconfigured")
	// ErrClosed: the broker is shutting down.
	ErrClosed = errors.New("broker: shutting down")
	// ErrEvicted: the key's scope set was dropped (idle, or to make room)
	// while the call was about to use it. The broker's methods retry such
	// calls themselves; asking again recreates the scope set.
	ErrEvicted = errors.New("broker: scope set evicted; request it again")
	// ErrTooManyScopeSets: the caller's share, the tenant or the broker
	// holds as many scope sets as allowed and none can be evicted.
	ErrTooManyScopeSets = errors.New("broker: too many scope sets")
	// ErrNewScopeSetsTooFast: the caller (WithOwner) created new scope sets
	// faster than Config.Limits.NewScopeSetsPerSecond allows. Scope sets that
	// exist are never limited.
	ErrNewScopeSetsTooFast = errors.New("broker: creating new scope sets too fast; reuse scope sets or retry in a second")
	// ErrShortLivedToken: the IdP's latest token does not stay valid for
	// the requested minimum, though a recent one would have; asking again
	// fetches another, at most once per CallerRetryInterval.
	ErrShortLivedToken = errors.New("broker: the identity provider's latest token is shorter-lived than the requested minimum validity, unlike recent ones; retry")
	// ErrInvalidArgument marks errors caused by the request itself.
	ErrInvalidArgument = errors.New("broker: invalid argument")
)

// TooShortLivedError reports that even a freshly issued token would not
// stay valid for the requested minimum: none of the key's last few tokens
// lived that long (Lifetime is the longest of them).
type TooShortLivedError struct {
	Lifetime, MinValid time.Duration
}

func (e *TooShortLivedError) Error() string {
	return fmt.Sprintf("broker: the identity provider issues tokens valid for %s, less than the requested minimum validity %s; request a shorter min_valid",
		readable(e.Lifetime), readable(e.MinValid))
}

// readable rounds d for a message: to the millisecond below 10 s, so that
// close durations never print alike, else to the second.
func readable(d time.Duration) time.Duration {
	if d < 10*time.Second && d > -10*time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}
