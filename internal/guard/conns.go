package guard

import (
	"context"
	"hash/maphash"
	"sync/atomic"

	"google.golang.org/grpc/peer"

	"github.com/tokenbroker/tokenbroker/internal/authn"
)

// conns remembers what each connection proves, so that the tap works it
// out once per connection instead of once per call (authn.PeerOf's
// address string, the certificate's identity, the SHA-256 of an API key:
// ~0.9 µs of a ~25 µs cache hit). A connection is grpc-go's *peer.Peer,
// made once per connection and shared by its calls. The table is
// direct-mapped: a connection that lands on another's slot takes it, and
// the other works its proof out again. An entry holds its peer, so that
// the peer's address is not reused by another connection while cached.
type conns struct {
	seed  maphash.Seed
	slots [connSlots]atomic.Pointer[connProof]
}

const connSlots = 256

func newConns() *conns { return &conns{seed: maphash.MakeSeed()} }

// connProof is what one connection proves.
type connProof struct {
	pr      *peer.Peer // the key
	peer    authn.Peer
	certID  authn.Identity // of peer.Cert, if any
	certErr error
	apiKey  atomic.Pointer[keyProof] // the last API key that came on it
}

// keyProof is an API key and its digest.
type keyProof struct {
	key    string
	digest authn.KeyDigest
}

// of returns the proof of the connection of ctx, made if new (nil ctx
// peer: an empty one, not cached).
func (t *conns) of(ctx context.Context) *connProof {
	pr, ok := peer.FromContext(ctx)
	if !ok || pr == nil {
		return &connProof{}
	}
	slot := &t.slots[maphash.Comparable(t.seed, pr)%connSlots]
	if c := slot.Load(); c != nil && c.pr == pr {
		return c
	}
	c := &connProof{pr: pr, peer: authn.PeerOf(ctx)}
	if c.peer.Cert != nil {
		c.certID, c.certErr = authn.FromCertificate(c.peer.Cert)
	}
	slot.Store(c)
	return c
}

// prove is prove(c.peer, cr) with the connection's certificate identity,
// and the digest of the key the connection sent last when cr's is the
// same (compared in constant time).
func (c *connProof) prove(cr Credentials) proof {
	pr := proof{keySent: cr.KeySent, keyErr: cr.KeyErr}
	switch {
	case cr.KeySent && cr.KeyErr == nil:
		pr.digest = c.digestOf(cr.Key)
	case !cr.KeySent && c.peer.Cert != nil:
		pr.cert, pr.certID, pr.certErr = true, c.certID, c.certErr
	}
	return pr
}

func (c *connProof) digestOf(key string) authn.KeyDigest {
	if k := c.apiKey.Load(); k != nil && equalKeys(k.key, key) {
		return k.digest
	}
	d := authn.HashKey(key)
	if c.pr != nil {
		c.apiKey.Store(&keyProof{key: key, digest: d})
	}
	return d
}

// equalKeys reports whether a and b are equal in a time that depends on
// their lengths only, as crypto/subtle.ConstantTimeCompare, without
// copying either to a []byte.
func equalKeys(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}
