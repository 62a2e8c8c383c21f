package guard

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/peer"

	"github.com/tokenbroker/tokenbroker/internal/authn"
)

// TestConnectionProofs: a connection's proof is worked out once and kept
// by grpc-go's peer of the connection, never shared with another
// connection from the same address; a key is hashed once per connection
// while it stays the same, and a different key, of the same length too,
// always gets its own digest.
func TestConnectionProofs(t *testing.T) {
	conns := newConns()
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}
	pa, pb := &peer.Peer{Addr: addr}, &peer.Peer{Addr: addr}
	ctxA, ctxB := peer.NewContext(context.Background(), pa), peer.NewContext(context.Background(), pb)
	a := conns.of(ctxA)
	if conns.of(ctxA) != a {
		t.Error("a second call on a connection worked its proof out again")
	}
	if conns.of(ctxB) == a {
		t.Error("two connections from one address share a proof")
	}
	if a.peer.Addr != "127.0.0.1:4242" || !a.peer.Loopback {
		t.Errorf("peer = %+v, want 127.0.0.1:4242, loopback", a.peer)
	}

	key, other := ciKey, strings.Repeat("x", len(ciKey))
	if d := a.prove(Credentials{KeySent: true, Key: key}).digest; d != authn.HashKey(key) {
		t.Fatal("digest of the first key is wrong")
	}
	kp := a.apiKey.Load()
	if d := a.prove(Credentials{KeySent: true, Key: key}).digest; d != authn.HashKey(key) || a.apiKey.Load() != kp {
		t.Error("the same key on the same connection was hashed again")
	}
	for _, k := range []string{other, key, "short"} {
		if d := a.prove(Credentials{KeySent: true, Key: k}).digest; d != authn.HashKey(k) {
			t.Errorf("key %q after another on the same connection: the other's digest", k)
		}
	}
	if pr := a.prove(Credentials{}); pr.keySent || pr.cert {
		t.Errorf("no credentials proved %+v", pr)
	}
}

func TestEqualKeys(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{{"", "", true}, {"abc", "abc", true}, {"abc", "abd", false}, {"abc", "ab", false}, {"xbc", "abc", false}} {
		if got := equalKeys(c.a, c.b); got != c.want {
			t.Errorf("equalKeys(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
