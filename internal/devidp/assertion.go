package devidp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	oautherrors "github.com/go-oauth2/oauth2/v4/errors"
)

// clientAssertionType is RFC 7523 §2.2's client_assertion_type.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

const (
	// MaxAssertionLifetime bounds exp-iat (exp-now without iat), as Auth0
	// does: a longer-lived assertion is refused.
	MaxAssertionLifetime = 5 * time.Minute
	// AssertionSkew is the clock skew allowed for exp, nbf and iat.
	AssertionSkew   = 10 * time.Second
	maxAssertionIDs = 100_000 // jti values remembered
	maxJTI          = 256     // bytes
)

// assertionAlgs are the JWS algorithms accepted: RSA and ECDSA, never
// "none" or HMAC (whose key would be the public key).
var assertionAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512,
}

// assertionError is a refused client authentication: an RFC 6749 code and
// the error_description, plain words the broker shows.
type assertionError struct {
	code   error
	reason string
}

func (e *assertionError) Error() string { return e.reason }

func refuse(format string, args ...any) error {
	return &assertionError{code: oautherrors.ErrInvalidClient, reason: fmt.Sprintf(format, args...)}
}

// parseJWKS reads a client's JWKS: at least one public signing key, each
// with a kid (the assertions name their key by it).
func parseJWKS(id string, raw []byte) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("devidp: client %q: JWKS: %w", id, err)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("devidp: client %q: JWKS has no keys", id)
	}
	for i, k := range set.Keys {
		switch {
		case !k.IsPublic() || !k.Valid():
			return nil, fmt.Errorf("devidp: client %q: JWKS key %d is not a public RSA or EC key; register the public keys only", id, i)
		case k.KeyID == "":
			return nil, fmt.Errorf("devidp: client %q: JWKS key %d has no kid", id, i)
		case k.Use != "" && k.Use != "sig":
			return nil, fmt.Errorf("devidp: client %q: JWKS key %d has use %q, want sig", id, i, k.Use)
		}
	}
	return &set, nil
}

// assertionClient authenticates a private_key_jwt request and returns its
// client's id and internal secret, for go-oauth2's password check.
func (s *Server) assertionClient(r *http.Request) (id, secret string, err error) {
	f := r.PostForm
	switch {
	case f.Get("client_secret") != "" || r.Header.Get("Authorization") != "":
		return "", "", &assertionError{code: oautherrors.ErrInvalidRequest, reason: "more than one client authentication method"}
	case f.Get("client_assertion_type") != clientAssertionType:
		return "", "", refuse("unsupported client assertion type")
	case f.Get("client_assertion") == "":
		return "", "", refuse("missing client assertion")
	}
	tok, err := jwt.ParseSigned(f.Get("client_assertion"), assertionAlgs)
	if err != nil {
		return "", "", refuse("client assertion is not a JWT signed with RS, PS or ES")
	}
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil || c.Issuer == "" {
		return "", "", refuse("client assertion has no issuer")
	}
	if cid := f.Get("client_id"); cid != "" && cid != c.Issuer {
		return "", "", refuse("client id does not match the assertion issuer")
	}
	client, ok := s.clients.get(c.Issuer)
	if !ok || client.keys == nil {
		return "", "", refuse("no client with registered keys is named by the assertion issuer")
	}
	if err := tok.Claims(client.keys, &c); err != nil {
		return "", "", refuse("client assertion signature does not verify with the registered keys")
	}
	if err := s.checkClaims(c, client.ID); err != nil {
		return "", "", err
	}
	return client.ID, client.Secret, nil
}

// checkClaims checks iss, sub, aud, exp, iat, nbf, the lifetime and jti
// (once: the jti is remembered until the assertion expires).
func (s *Server) checkClaims(c jwt.Claims, id string) error {
	now := time.Now()
	err := c.ValidateWithLeeway(jwt.Expected{
		Issuer: id, Subject: id, AnyAudience: jwt.Audience{s.TokenURL(), s.url}, Time: now,
	}, AssertionSkew)
	reasons := map[error]string{
		jwt.ErrInvalidSubject:  "subject is not the client",
		jwt.ErrInvalidAudience: "audience is neither the token endpoint nor the issuer",
		jwt.ErrExpired:         "expired", jwt.ErrNotValidYet: "not valid yet", jwt.ErrIssuedInTheFuture: "issued in the future",
	}
	for e, why := range reasons {
		if errors.Is(err, e) {
			return refuse("client assertion %s", why)
		}
	}
	switch {
	case err != nil:
		return refuse("client assertion claims are invalid")
	case c.Expiry == nil:
		return refuse("client assertion has no expiry")
	case c.IssuedAt != nil && c.Expiry.Time().Sub(c.IssuedAt.Time()) > MaxAssertionLifetime,
		c.IssuedAt == nil && c.Expiry.Time().Sub(now) > MaxAssertionLifetime+AssertionSkew:
		return refuse("client assertion lives longer than %d minutes", int(MaxAssertionLifetime/time.Minute))
	case c.ID == "":
		return refuse("client assertion has no jti")
	case len(c.ID) > maxJTI:
		return refuse("client assertion jti is too long")
	}
	switch s.replay.use(id+"\x00"+c.ID, c.Expiry.Time().Add(AssertionSkew), now) {
	case replayed:
		return refuse("client assertion jti was used before")
	case replayFull:
		return &assertionError{code: oautherrors.ErrTemporarilyUnavailable, reason: "too many client assertions to remember; retry later"}
	}
	return nil
}

type replayResult int

const (
	replayFresh replayResult = iota
	replayed
	replayFull
)

// replayCache remembers each (client, jti) until its assertion expires, at
// most max: when full, new assertions are refused, none forgotten early.
type replayCache struct {
	mu   sync.Mutex
	max  int
	seen map[string]time.Time // until when the key is refused
}

func (c *replayCache) use(key string, until, now time.Time) replayResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.seen[key]; ok && now.Before(t) {
		return replayed
	}
	if len(c.seen) >= c.max {
		for k, t := range c.seen {
			if !now.Before(t) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= c.max {
			return replayFull
		}
	}
	c.seen[key] = until
	return replayFresh
}
