package broker

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// jwtExpSlack is how far a JWT exp may fall short of expires_in (whole
// seconds, counted from when the request left) before it is logged.
const jwtExpSlack = 5 * time.Second

// tokenExpiry decides when a granted token expires, counted from start,
// when the request was sent: expires_in (missing: DefaultLifetime; capped
// at MaxLifetime; zero or less refuses the token), shortened by a JWT
// access token's exp claim, read unverified since it can only shorten the
// lifetime (already past: refused). It logs which source won, never the token.
func tokenExpiry(log *slog.Logger, start, now time.Time, g upstream.Grant) (time.Time, string, error) {
	lifetime, source := g.ExpiresIn, "expires_in"
	switch {
	case g.ExpiresInSet && g.ExpiresIn <= 0:
		log.Warn("identity provider issued a token that is already expired; refusing it", "expires_in", g.ExpiresIn)
		return time.Time{}, "", fmt.Errorf("broker: the identity provider issued a token with expires_in %s, already expired; check the identity provider's token lifetime settings", g.ExpiresIn)
	case !g.ExpiresInSet:
		log.Warn("identity provider gave no usable expires_in; assuming a short lifetime", "assumed", DefaultLifetime)
		lifetime, source = DefaultLifetime, "default"
	case lifetime > MaxLifetime:
		log.Warn("identity provider's expires_in is implausibly long; capping it",
			"expires_in", g.ExpiresIn, "cap", MaxLifetime)
		lifetime, source = MaxLifetime, "max_lifetime"
	}
	expiry := start.Add(lifetime)
	if exp, ok := jwtExpiry(g.AccessToken); ok {
		if !exp.After(now) {
			log.Warn("identity provider issued a JWT whose exp claim is already past; refusing it", "exp", exp)
			return time.Time{}, "", fmt.Errorf("broker: the identity provider issued a token whose JWT exp %s is already past; check the clocks of the identity provider and the broker", exp.UTC().Format(time.RFC3339))
		}
		if exp.Before(expiry) {
			if expiry.Sub(exp) > jwtExpSlack {
				log.Info("the access token's JWT exp is earlier than expires_in says; using it",
					"expires_in", g.ExpiresIn, "exp", exp)
			}
			expiry, source = exp, "jwt_exp"
		}
	}
	log.Debug("token expiry decided", "expiry", expiry, "expiry_source", source)
	return expiry, source, nil
}

// jwtExpiry returns the exp claim of an access token that is a JWT,
// without verifying it.
func jwtExpiry(accessToken string) (time.Time, bool) {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(accessToken, &claims); err != nil || claims.ExpiresAt == nil {
		return time.Time{}, false
	}
	return claims.ExpiresAt.Time, true
}
