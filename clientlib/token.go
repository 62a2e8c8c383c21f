package clientlib

import (
	"cmp"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
)

// ExtraTokenSHA256 is the oauth2.Token.Extra key of the hex SHA-256 of a
// Source's token: the fingerprint by which the broker names it.
const ExtraTokenSHA256 = "token_sha256"

// token is a token as handed out: immutable, hot paths precomputed.
type token struct {
	oauth      *oauth2.Token
	sha256     string
	authz      []string // the Authorization header value; never modified
	expiry     time.Time
	lifetime   time.Duration
	freshUntil time.Time // Token answers from the cache until then
	// freshUntilMicros is freshUntil in Unix microseconds, for wallMicros.
	freshUntilMicros int64
	refreshAt        time.Time // after this, a newer token likely exists
}

func (t *token) valid(now time.Time) bool { return now.Before(t.expiry) }

// newToken turns a received token into the form handed out. A token is
// fresh while it has minValid left, or half its lifetime for short ones.
func newToken(r rawToken, minValid time.Duration, now time.Time) *token {
	issued := r.issued
	if issued.IsZero() || !issued.Before(r.expiry) {
		issued = now
	}
	lifetime := r.expiry.Sub(issued)
	typ := cmp.Or(r.typ, "Bearer")
	sha := broker.Fingerprint(r.access)
	o := (&oauth2.Token{AccessToken: r.access, TokenType: typ, Expiry: r.expiry}).
		WithExtra(map[string]any{ExtraTokenSHA256: sha})
	freshUntil := r.expiry.Add(-min(minValid, lifetime/2))
	return &token{
		oauth:            o,
		sha256:           sha,
		authz:            []string{o.Type() + " " + r.access},
		expiry:           r.expiry,
		lifetime:         lifetime,
		freshUntil:       freshUntil,
		freshUntilMicros: freshUntil.UnixMicro(),
		refreshAt:        issued.Add(lifetime / 2),
	}
}
