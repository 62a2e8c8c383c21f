package authn

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeyDigest is the SHA-256 of an API key.
type KeyDigest [sha256.Size]byte

// ParseKeyDigest parses 64 hex digits (either case) as a KeyDigest.
func ParseKeyDigest(s string) (KeyDigest, error) {
	var d KeyDigest
	if len(s) != 2*len(d) {
		return d, fmt.Errorf("authn: API key digest must be %d hex digits (the SHA-256 of the key, e.g. from `printf %%s \"$KEY\" | sha256sum`), got %d characters", 2*len(d), len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, errors.New("authn: API key digest must be hex digits only")
	}
	return d, nil
}

// HashKey returns the digest of an API key. A key of up to 128 bytes is
// copied on the stack: hashing it allocates nothing (once per call).
func HashKey(key string) KeyDigest {
	var buf [128]byte
	return sha256.Sum256(append(buf[:0], key...))
}

// String returns the digest in lower-case hex.
func (d KeyDigest) String() string { return hex.EncodeToString(d[:]) }

// KeySet matches presented API keys against configured digests.
type KeySet struct{ digests []KeyDigest }

// NewKeySet returns a KeySet of the given digests, in order.
func NewKeySet(digests []KeyDigest) *KeySet {
	return &KeySet{digests: append([]KeyDigest(nil), digests...)}
}

// MatchDigest compares the digest of a key with every digest in constant
// time, without stopping at the first match, and returns the index of the
// matching one.
func (s *KeySet) MatchDigest(sum KeyDigest) (int, bool) {
	found := -1
	for i := range s.digests {
		eq := subtle.ConstantTimeCompare(sum[:], s.digests[i][:])
		found = subtle.ConstantTimeSelect(eq&subtle.ConstantTimeEq(int32(found), -1), i, found)
	}
	return found, found >= 0
}

// ErrBadAuthorization is returned by ParseBearer when the authorization
// metadata is present but not a usable bearer key. Its message never
// contains the metadata's value.
var ErrBadAuthorization = errors.New(`authorization metadata must be "Bearer <api key>"`)

// ParseBearer returns the API key of the values of a call's
// "authorization: Bearer <key>" metadata. present is false when there
// are none; err is ErrBadAuthorization when it is malformed or repeated.
func ParseBearer(vals []string) (key string, present bool, err error) {
	if len(vals) == 0 {
		return "", false, nil
	}
	if len(vals) > 1 {
		return "", true, ErrBadAuthorization
	}
	// Parsed here rather than by auth.AuthFromMD, which would copy the
	// incoming metadata once more on every call.
	scheme, key, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(key) == "" || strings.ContainsAny(key, " \t") {
		return "", true, ErrBadAuthorization
	}
	return key, true, nil
}
