package guard

import (
	"hash/maphash"
	"sync/atomic"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// fingerprints caches the audit fingerprint of recently issued tokens, so
// that a cache hit hashes no token (a SHA-256 over the whole access
// token on every call, before). It is direct-mapped by tenant and
// version; an entry counts only if its token equals the one asked about,
// a comparison that costs nothing more than a pointer check when, as
// always for a cached token, both strings share their bytes.
type fingerprints struct {
	seed  maphash.Seed
	slots [fingerprintSlots]atomic.Pointer[fingerprintEntry]
}

const fingerprintSlots = 256

// maxFingerprintedToken is the largest access token the cache keeps: an
// entry holds its token, and 256 of an IdP's 200 KB tokens would pin
// 50 MB of old tokens. Larger tokens are hashed on every call.
const maxFingerprintedToken = 8 << 10

type fingerprintEntry struct {
	token, fp string
}

type tokenKey struct {
	tenant  string
	version uint64
}

// of returns audit.Fingerprint of tok's access token.
func (f *fingerprints) of(tok *tbv1.Token) string {
	access := tok.GetAccessToken()
	if access == "" {
		return ""
	}
	if len(access) > maxFingerprintedToken {
		return audit.Fingerprint(access)
	}
	slot := &f.slots[maphash.Comparable(f.seed, tokenKey{tok.GetTenant(), tok.GetVersion()})%fingerprintSlots]
	if e := slot.Load(); e != nil && e.token == access {
		return e.fp
	}
	e := &fingerprintEntry{token: access, fp: audit.Fingerprint(access)}
	slot.Store(e)
	return e.fp
}
