package broker_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

func TestScopeSetLimits(t *testing.T) {
	e := newEnv(t, broker.Config{MaxScopeSetsPerTenant: 3}) // default key + 2
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
