package guard

import (
	"fmt"
	"hash/maphash"
	"testing"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// TestFingerprintsMatchEachToken: the cached fingerprint is always the
// token's own, also for tokens of one tenant and version (two scope
// sets) and for more tokens than slots.
func TestFingerprintsMatchEachToken(t *testing.T) {
	f := &fingerprints{seed: maphash.MakeSeed()}
	var toks []*tbv1.Token
	for i := range 2 * fingerprintSlots {
		toks = append(toks,
			&tbv1.Token{AccessToken: fmt.Sprintf("token-%d-a", i), Tenant: "acme", Version: uint64(i)},
			&tbv1.Token{AccessToken: fmt.Sprintf("token-%d-b", i), Tenant: "acme", Version: uint64(i)})
	}
	for round := range 2 {
		for _, tok := range toks {
			if got, want := f.of(tok), audit.Fingerprint(tok.GetAccessToken()); got != want {
				t.Fatalf("round %d: %s fingerprint %s, want %s", round, tok.GetAccessToken(), got, want)
			}
		}
	}
	if got := f.of(&tbv1.Token{Tenant: "acme"}); got != "" {
		t.Errorf("token without access token: fingerprint %q, want none", got)
	}
}

// Red team (issue 11, round 3): the cache held every slot's token, so an
// IdP's 200 KB tokens pinned 50 MB of old tokens. Tokens over the bound
// get their own fingerprint and are never kept.
func TestFingerprintsKeepNoLargeToken(t *testing.T) {
	f := &fingerprints{seed: maphash.MakeSeed()}
	for i := range 2 * fingerprintSlots {
		access := fmt.Sprintf("%d-%0*d", i, maxFingerprintedToken, 0)
		if got, want := f.of(&tbv1.Token{AccessToken: access, Tenant: "acme", Version: uint64(i)}), audit.Fingerprint(access); got != want {
			t.Fatalf("token %d: fingerprint %s, want %s", i, got, want)
		}
	}
	for i := range f.slots {
		if e := f.slots[i].Load(); e != nil {
			t.Fatalf("slot %d keeps a %d-byte token; want tokens over %d bytes never kept", i, len(e.token), maxFingerprintedToken)
		}
	}
}
