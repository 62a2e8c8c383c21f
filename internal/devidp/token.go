package devidp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-oauth2/oauth2/v4"
	"github.com/golang-jwt/jwt/v5"
)

// claims are the claims of an access token issued by the IdP.
type claims struct {
	Scope string `json:"scope,omitempty"`
	jwt.RegisteredClaims
}

// jwtAccess is an oauth2.AccessGenerate issuing HS256 JWTs with sub, scope,
// iat and jti, which go-oauth2's JWTAccessGenerate lacks.
type jwtAccess struct {
	issuer string
	key    []byte
}

func (g *jwtAccess) Token(_ context.Context, data *oauth2.GenerateBasic, _ bool) (access, refresh string, err error) {
	ti := data.TokenInfo
	iat := ti.GetAccessCreateAt()
	c := claims{
		Scope: ti.GetScope(),
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    g.issuer,
			Subject:   data.Client.GetID(),
			IssuedAt:  jwt.NewNumericDate(iat),
			ExpiresAt: jwt.NewNumericDate(iat.Add(ti.GetAccessExpiresIn())),
			ID:        randomHex(16),
		},
	}
	access, err = jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(g.key)
	if err != nil {
		return "", "", fmt.Errorf("devidp: sign access token: %w", err)
	}
	return access, "", nil
}

// handleWhoami answers a bearer token's claims if this IdP issued it and
// it is valid.
func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	var c claims
	if ok {
		_, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return s.key, nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithIssuer(s.url), jwt.WithExpirationRequired())
		ok = err == nil
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devidp"`)
		http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"client_id": c.Subject, "scope": c.Scope, "expires_at": c.ExpiresAt.UTC().Format(time.RFC3339),
	})
}
