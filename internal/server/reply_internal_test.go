package server

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// TestRepliesAreMadeOncePerToken: every call that gets a token gets the
// same reply, sent as proto.Marshal's encoding of it, whose fingerprint
// is the audit fingerprint of its access token; InvalidateToken's reply
// of the token is encoded exactly as its own message would be.
func TestRepliesAreMadeOncePerToken(t *testing.T) {
	tok := &broker.Token{AccessToken: "AT-do-not-leak", TokenType: "Bearer", Tenant: "acme", Scopes: []string{"read"}, Version: 7}
	r := tokenReply(tok)
	if tokenReply(tok) != r {
		t.Error("a token asked twice got two replies; want the one made for it")
	}
	if got, want := r.TokenFingerprint(), audit.Fingerprint(tok.AccessToken); got != want {
		t.Errorf("fingerprint %q, want %q", got, want)
	}
	for name, m := range map[string]*reply{"GetToken": r, "InvalidateToken": invalidateReply(tok)} {
		want, err := proto.Marshal(m.Message)
		if err != nil {
			t.Fatal(err)
		}
		wire, err := codec{}.Marshal(m)
		if err != nil || !bytes.Equal(wire.Materialize(), want) {
			t.Errorf("%s reply sent as %x, %v; want %x", name, wire.Materialize(), err, want)
		}
		if got := m.GetToken(); got.GetAccessToken() != tok.AccessToken || got.GetVersion() != tok.Version {
			t.Errorf("%s reply carries version %d", name, got.GetVersion())
		}
	}
	if _, ok := invalidateReply(tok).Message.(*tbv1.InvalidateTokenResponse); !ok {
		t.Error("InvalidateToken's reply is not an InvalidateTokenResponse")
	}
}
