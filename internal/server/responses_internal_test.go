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
