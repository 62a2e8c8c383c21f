package server

import (
	"fmt"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
)

// TestResponseCacheAnswersEachToken: with more tokens than slots, so that
// tokens share slots, every response carries its own token, and a token
// asked again while still cached gets the same message.
func TestResponseCacheAnswersEachToken(t *testing.T) {
	c := newResponseCache()
	toks := make([]*broker.Token, 4*responseSlots)
	for i := range toks {
		toks[i] = &broker.Token{AccessToken: fmt.Sprintf("token-%d", i), Tenant: "acme", Version: uint64(i + 1)}
	}
	for round := range 2 {
		for i, tok := range toks {
			if got := c.get(tok).GetToken(); got.GetAccessToken() != tok.AccessToken || got.GetVersion() != tok.Version {
				t.Fatalf("round %d: token %d answered with %q version %d", round, i, got.GetAccessToken(), got.GetVersion())
			}
		}
	}
	tok := toks[0]
	if a, b := c.get(tok), c.get(tok); a != b {
		t.Error("a token asked twice in a row got two messages; want the cached one")
	}
}
