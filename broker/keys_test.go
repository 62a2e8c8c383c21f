package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/limits"
)

func TestScopeSetLimits(t *testing.T) {
	e := newEnv(t, broker.Config{Limits: limits.Limits{MaxScopeSetsPerTenant: 3}}) // default key + 2
	var watches []*broker.Watch
	for _, s := range []string{"a", "b"} {
		w, err := e.broker.Watch("acme", []string{s})
		if err != nil {
			t.Fatal(err)
		}
		next(t, w, hasVersion(1)) // not being fetched any more
		watches = append(watches, w)
	}
	if _, err := e.token(t.Context(), []string{"c"}, 0); !errors.Is(err, broker.ErrTooManyScopeSets) {
		t.Fatalf("third scope set with both others watched: err = %v, want ErrTooManyScopeSets", err)
	}
	watches[0].Close()
	if _, err := e.token(t.Context(), []string{"c"}, 0); err != nil {
		t.Fatalf("after a watch closed, the unwatched key should be evicted: %v", err)
	}
	watches[1].Close()
}

func TestIdleScopeSetsAreDropped(t *testing.T) {
	e := newEnv(t, broker.Config{IdleTimeout: 10 * time.Minute})
	e.mustToken(nil, 0)
	tok := e.mustToken([]string{"idle"}, 0)
	before := e.idp.RequestsFor(e.client.ID)
	// Past the refresh point of both keys; only the default key refreshes.
	e.clock.Advance(tok.Expiry.Sub(e.clock.Now()) - 30*time.Second)
	w, err := e.broker.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w, hasVersion(2))
	if n := e.idp.RequestsFor(e.client.ID) - before; n != 1 {
		t.Errorf("%d refreshes, want 1: the idle key should have been dropped, not refreshed", n)
	}
	// Asking again starts afresh, and the version still only increases.
	if again := e.mustToken([]string{"idle"}, 0); again.Version <= tok.Version {
		t.Errorf("re-created key serves version %d after version %d", again.Version, tok.Version)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, broker.Config{})
	tooMany := make([]string, 33)
	for i := range tooMany {
		tooMany[i] = string(rune('a'+i%26)) + strings.Repeat("x", i/26)
	}
	for _, tc := range []struct {
		name, tenant string
		scopes       []string
		want         error
		msg          string
	}{
		{"upper-case tenant", "Acme", nil, broker.ErrInvalidArgument, `tenant name "Acme"`},
		{"empty tenant", "", nil, broker.ErrInvalidArgument, "tenant name"},
		{"unknown tenant", "nobody", nil, broker.ErrUnknownTenant, `unknown tenant "nobody"`},
		{"scope with space", "acme", []string{"a b"}, broker.ErrInvalidArgument, "scope"},
		{"too many scopes", "acme", tooMany, broker.ErrInvalidArgument, "32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.broker.Token(t.Context(), tc.tenant, tc.scopes, 0)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}

// TestNewScopeSetRate: a named owner creates new scope sets at most at
// NewScopeSetsPerSecond after its burst (issue D4); existing sets, other
// owners and the embedding program (no owner) are not limited.
func TestNewScopeSetRate(t *testing.T) {
	e := newEnv(t, broker.Config{Limits: limits.Limits{NewScopeSetsPerSecond: 2, NewScopeSetBurst: 3, MaxScopeSetsPerTenant: 1000}})
	mallory := broker.WithOwner(t.Context(), "mallory")
	get := func(ctx context.Context, scope string) error {
		_, err := e.broker.Token(ctx, "acme", []string{scope}, 0)
		return err
	}
	for i := range 3 {
		if err := get(mallory, fmt.Sprint("s", i)); err != nil {
			t.Fatalf("new set %d within the burst: %v", i, err)
		}
	}
	before := e.idp.RequestsFor(e.client.ID)
	err := get(mallory, "s3")
	if !errors.Is(err, broker.ErrNewScopeSetsTooFast) {
		t.Fatalf("fourth new set at once: %v, want ErrNewScopeSetsTooFast", err)
	}
	if !strings.Contains(err.Error(), "creating new scope sets too fast; reuse scope sets or retry in a second") {
		t.Errorf("message %q does not say what to do", err)
	}
	if n := e.idp.RequestsFor(e.client.ID) - before; n != 0 {
		t.Errorf("a refused new set cost %d identity-provider requests", n)
	}
	// Existing sets are served; other owners and the program are not limited.
	if err := get(mallory, "s0"); err != nil {
		t.Errorf("existing set refused: %v", err)
	}
	if err := get(broker.WithOwner(t.Context(), "alice"), "a0"); err != nil {
		t.Errorf("another owner refused: %v", err)
	}
	for i := range 10 {
		if err := get(t.Context(), fmt.Sprint("p", i)); err != nil {
			t.Fatalf("the embedding program refused: %v", err)
		}
	}
	// Half a second later, one more token (2/s) is there.
	e.clock.Advance(500 * time.Millisecond)
	if err := get(mallory, "s3"); err != nil {
		t.Errorf("after refill: %v", err)
	}
	if err := get(mallory, "s4"); !errors.Is(err, broker.ErrNewScopeSetsTooFast) {
		t.Errorf("second new set after one refilled: %v", err)
	}
}

// TestNewScopeSetRateOff: a negative rate disables the limit.
func TestNewScopeSetRateOff(t *testing.T) {
	e := newEnv(t, broker.Config{Limits: limits.Limits{NewScopeSetsPerSecond: -1, MaxScopeSetsPerTenant: 1000}})
	ctx := broker.WithOwner(t.Context(), "bulk")
	for i := range 60 {
		if _, err := e.broker.Token(ctx, "acme", []string{fmt.Sprint("s", i)}, 0); err != nil {
			t.Fatalf("set %d: %v", i, err)
		}
	}
}
