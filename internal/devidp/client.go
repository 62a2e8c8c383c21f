package devidp

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-oauth2/oauth2/v4"
	"github.com/go-oauth2/oauth2/v4/errors"
)

// Client is an OAuth2 confidential client registered with the IdP.
// Its String and LogValue methods redact the secret.
type Client struct {
	ID string
	// Secret authenticates a client_secret_post or client_secret_basic
	// client; empty for a private_key_jwt client.
	Secret string
	// JWKS, public keys each with a kid (as `broker keys` prints them),
	// makes it a private_key_jwt client.
	JWKS   []byte
	Scopes []string // the scopes it may request; nil allows any

	keys *jose.JSONWebKeySet // parsed JWKS
}

// NewClient returns a client with a random id and secret, allowed any scope.
func NewClient() Client {
	return Client{ID: "dev-" + randomHex(4), Secret: randomHex(32)}
}

// String implements fmt.Stringer without revealing the secret.
func (c Client) String() string {
	return fmt.Sprintf("devidp.Client{ID: %q, Secret: REDACTED, Scopes: %q}", c.ID, c.Scopes)
}

// LogValue implements slog.LogValuer without revealing the secret.
func (c Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", c.ID), slog.Any("scopes", c.Scopes))
}

// prepared validates c for the store: a private_key_jwt client gets its
// parsed keys and a random internal secret, which only a verified
// assertion supplies.
func (c Client) prepared() (Client, error) {
	switch {
	case c.ID == "":
		return c, fmt.Errorf("devidp: client %q: id is required", c.ID)
	case len(c.JWKS) > 0 && c.Secret != "":
		return c, fmt.Errorf("devidp: client %q: set a secret or a JWKS, not both", c.ID)
	case len(c.JWKS) > 0:
		keys, err := parseJWKS(c.ID, c.JWKS)
		if err != nil {
			return c, err
		}
		c.keys, c.Secret = keys, randomHex(32)
	case c.Secret == "":
		return c, fmt.Errorf("devidp: client %q: a secret or a JWKS is required", c.ID)
	}
	return c, nil
}

// allows reports whether every requested scope is in the client's allowed set.
func (c Client) allows(requested []string) bool {
	if c.Scopes == nil {
		return true
	}
	for _, s := range requested {
		if !slices.Contains(c.Scopes, s) {
			return false
		}
	}
	return true
}

// clientInfo adapts Client to go-oauth2, checking secrets in constant time.
type clientInfo struct{ Client }

var _ oauth2.ClientPasswordVerifier = clientInfo{} // go-oauth2 looks for it

func (c clientInfo) GetID() string     { return c.ID }
func (c clientInfo) GetSecret() string { return c.Secret }
func (c clientInfo) GetDomain() string { return "" }
func (c clientInfo) IsPublic() bool    { return false }
func (c clientInfo) GetUserID() string { return "" }

func (c clientInfo) VerifyPassword(secret string) bool {
	return subtle.ConstantTimeCompare([]byte(c.Secret), []byte(secret)) == 1
}

// clientStore is an oauth2.ClientStore that can delete, and answers
// invalid_client for an unknown one (go-oauth2's answers 500).
type clientStore struct {
	mu      sync.RWMutex
	clients map[string]Client
}

func (s *clientStore) GetByID(_ context.Context, id string) (oauth2.ClientInfo, error) {
	c, ok := s.get(id)
	if !ok {
		return nil, errors.ErrInvalidClient
	}
	return clientInfo{c}, nil
}

func (s *clientStore) get(id string) (Client, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.clients[id]
	return c, ok
}

func (s *clientStore) set(c Client) {
	c.Scopes = slices.Clone(c.Scopes)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.ID] = c
}

// discardTokens is an oauth2.TokenStore that keeps nothing: tokens are
// JWTs (and go-oauth2's memory store leaks a goroutine).
type discardTokens struct{}

func (discardTokens) Create(context.Context, oauth2.TokenInfo) error                 { return nil }
func (discardTokens) RemoveByCode(context.Context, string) error                     { return nil }
func (discardTokens) RemoveByAccess(context.Context, string) error                   { return nil }
func (discardTokens) RemoveByRefresh(context.Context, string) error                  { return nil }
func (discardTokens) GetByCode(context.Context, string) (oauth2.TokenInfo, error)    { return nil, nil }
func (discardTokens) GetByAccess(context.Context, string) (oauth2.TokenInfo, error)  { return nil, nil }
func (discardTokens) GetByRefresh(context.Context, string) (oauth2.TokenInfo, error) { return nil, nil }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails since Go 1.24
	return hex.EncodeToString(b)
}
