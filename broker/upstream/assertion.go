package upstream

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// private_key_jwt client authentication (RFC 7523 §2.2, OpenID Connect
// Core §9): every token request carries a new assertion signed with the
// client's key. go-jose signs it and encodes the JWKs.

// ClientAssertionType is the client_assertion_type of private_key_jwt.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// AssertionLifetime is how long a client assertion is valid after its
// iat: room for the request and for clocks that disagree by up to that
// much, and well within the 5 minutes the strictest IdPs (Auth0) allow.
const AssertionLifetime = 2 * time.Minute

// assertionSigner signs the client assertions of one key.
type assertionSigner struct {
	signer jose.Signer
}

// newAssertionSigner prepares the signer of key, whose JWS kid is keyID
// ("" for the key's RFC 7638 thumbprint, KeyID).
func newAssertionSigner(key creds.PrivateKey, keyID string) (*assertionSigner, error) {
	alg, err := algorithm(key.Public())
	if err != nil {
		return nil, err
	}
	if keyID == "" {
		if keyID, err = KeyID(key); err != nil {
			return nil, err
		}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key.Signer(), KeyID: keyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("upstream: client assertion key: %w", err)
	}
	return &assertionSigner{signer: s}, nil
}

// assertionClaims are a client assertion's claims: iss and sub are the
// client, aud the IdP (one string, as OpenID Connect Core §9 now asks),
// jti a fresh random value, and exp AssertionLifetime after iat.
type assertionClaims struct {
	Issuer   string           `json:"iss"`
	Subject  string           `json:"sub"`
	Audience string           `json:"aud"`
	ID       string           `json:"jti"`
	IssuedAt *jwt.NumericDate `json:"iat"`
	Expiry   *jwt.NumericDate `json:"exp"`
}

// sign returns a new assertion for clientID and audience at now, and its
// signature (the part no one else can produce, which the IdP's answer
// must not echo).
func (s *assertionSigner) sign(clientID, audience string, now time.Time) (assertion, signature string, err error) {
	c := assertionClaims{
		Issuer: clientID, Subject: clientID, Audience: audience,
		ID:       rand.Text(), // 26 base32 characters: 130 random bits
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(AssertionLifetime)),
	}
	assertion, err = jwt.Signed(s.signer).Claims(c).Serialize()
	if err != nil {
		return "", "", fmt.Errorf("upstream: sign the client assertion: %w", err)
	}
	return assertion, assertion[strings.LastIndexByte(assertion, '.')+1:], nil
}

// algorithm is the JWS algorithm the broker signs with for a public key:
// RS256 for RSA, ES256/ES384/ES512 by curve.
func algorithm(pub crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return jose.RS256, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
	}
	return "", errors.New("upstream: client assertion key: not RSA or ECDSA on P-256, P-384 or P-521")
}

// KeyID is the default JWS kid of key: its RFC 7638 JWK thumbprint
// (SHA-256, base64url), which the IdP can compute from the registered
// public key too.
func KeyID(key creds.PrivateKey) (string, error) {
	jwk := jose.JSONWebKey{Key: key.Public()}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("upstream: client assertion key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// JWKS returns the public JSON Web Key Set of the private_key_jwt
// credentials among creds, for registering them with an IdP:
// {"keys":[{"use":"sig","kty":…,"kid":…,"alg":…,"n"/"e" or "crv"/"x"/"y"}]},
// each kid as the assertions carry it. It never holds a private part.
func JWKS(creds ...Credential) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, c := range creds {
		if c.Key.IsZero() {
			continue
		}
		alg, err := algorithm(c.Key.Public())
		if err != nil {
			return nil, err
		}
		kid := c.KeyID
		if kid == "" {
			if kid, err = KeyID(c.Key); err != nil {
				return nil, err
			}
		}
		// Only the public key goes in: there is no private part to leak.
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: c.Key.Public(), KeyID: kid, Algorithm: string(alg), Use: "sig"})
	}
	return json.MarshalIndent(set, "", "  ")
}
