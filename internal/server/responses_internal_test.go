package server

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// TestResponseCacheAnswersEachToken: with more tokens than slots, so that
// tokens share slots, every response carries its own token, and a token
// asked again while still cached gets the same message; the codec sends
// each message as its own encoding and keeps no more encodings than
// there are slots.
func TestResponseCacheAnswersEachToken(t *testing.T) {
	codec := newSharedCodec()
	c := newResponseCache(codec)
	toks := make([]*broker.Token, 4*responseSlots)
	for i := range toks {
		toks[i] = &broker.Token{AccessToken: fmt.Sprintf("token-%d", i), Tenant: "acme", Version: uint64(i + 1)}
	}
	for round := range 2 {
		for i, tok := range toks {
			resp := c.get(tok)
			if got := resp.GetToken(); got.GetAccessToken() != tok.AccessToken || got.GetVersion() != tok.Version {
				t.Fatalf("round %d: token %d answered with %q version %d", round, i, got.GetAccessToken(), got.GetVersion())
			}
			wire, err := codec.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			var sent tbv1.GetTokenResponse
			if err := proto.Unmarshal(wire.Materialize(), &sent); err != nil {
				t.Fatal(err)
			}
			if got := sent.GetToken(); got.GetAccessToken() != tok.AccessToken || got.GetVersion() != tok.Version {
				t.Fatalf("round %d: token %d sent as %q version %d", round, i, got.GetAccessToken(), got.GetVersion())
			}
		}
	}
	kept := 0
	codec.wire.Range(func(any, any) bool { kept++; return true })
	if kept > responseSlots {
		t.Errorf("the codec keeps %d encodings for %d slots", kept, responseSlots)
	}
	tok := toks[0]
	if a, b := c.get(tok), c.get(tok); a != b {
		t.Error("a token asked twice in a row got two messages; want the cached one")
	}
}

// Red team (issue 11, round 3): each slot held its token and encoding, so
// an IdP's 200 KB tokens pinned 100 MB. Responses of tokens over the
// bound are built per call and never kept.
func TestResponseCacheKeepsNoLargeToken(t *testing.T) {
	codec := newSharedCodec()
	c := newResponseCache(codec)
	for i := range 2 * responseSlots {
		tok := &broker.Token{AccessToken: fmt.Sprintf("%d-%0*d", i, maxCachedToken, 0), Tenant: "acme", Version: uint64(i + 1)}
		if got := c.get(tok).GetToken(); got.GetAccessToken() != tok.AccessToken || got.GetVersion() != tok.Version {
			t.Fatalf("token %d answered with version %d", i, got.GetVersion())
		}
	}
	for i := range c.slots {
		if e := c.slots[i].Load(); e != nil {
			t.Fatalf("slot %d keeps a %d-byte token; want tokens over %d bytes never kept", i, len(e.tok.AccessToken), maxCachedToken)
		}
	}
	n := 0
	codec.wire.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Errorf("the codec keeps %d encodings of large tokens, want 0", n)
	}
}
