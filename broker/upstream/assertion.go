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

// ClientAssertionType is the client_assertion_type of private_key_jwt.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// AssertionLifetime is how long a client assertion is valid after its iat:
// room for skewed clocks, within the 5 minutes strict IdPs (Auth0) allow.
const AssertionLifetime = 2 * time.Minute

// newSigner returns the signer of key's client assertions, whose JWS kid
// is keyID ("": KeyID).
func newSigner(key creds.PrivateKey, keyID string) (jose.Signer, error) {
	jwk, err := publicJWK(key, keyID)
	if err != nil {
		return nil, err
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(jwk.Algorithm), Key: jose.JSONWebKey{Key: key.Signer(), KeyID: jwk.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("upstream: client assertion key: %w", err)
	}
	return s, nil
}

// publicJWK is key's public JWK as the assertions name it: its kid
// (keyID, else KeyID) and algorithm.
func publicJWK(key creds.PrivateKey, keyID string) (jose.JSONWebKey, error) {
	alg, err := algorithm(key.Public())
	if err == nil && keyID == "" {
		keyID, err = KeyID(key)
	}
	return jose.JSONWebKey{Key: key.Public(), KeyID: keyID, Algorithm: string(alg), Use: "sig"}, err
}

// assertionClaims are a client assertion's claims (RFC 7523 §3); aud is
// one string, as OpenID Connect Core §9 asks.
type assertionClaims struct {
	Issuer   string           `json:"iss"`
	Subject  string           `json:"sub"`
	Audience string           `json:"aud"`
	ID       string           `json:"jti"`
	IssuedAt *jwt.NumericDate `json:"iat"`
	Expiry   *jwt.NumericDate `json:"exp"`
}

// sign returns a new assertion for clientID and audience at now, and its
// signature, which the IdP's answer must not echo.
func sign(s jose.Signer, clientID, audience string, now time.Time) (assertion, signature string, err error) {
	c := assertionClaims{
		Issuer: clientID, Subject: clientID, Audience: audience,
		ID:       rand.Text(), // 26 base32 characters: 130 random bits
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(AssertionLifetime)),
	}
	assertion, err = jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		return "", "", fmt.Errorf("upstream: sign the client assertion: %w", err)
	}
	return assertion, assertion[strings.LastIndexByte(assertion, '.')+1:], nil
}

// algorithm is the JWS algorithm for a public key: RS256, or ES* by curve.
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

// KeyID is the default JWS kid of key: its RFC 7638 thumbprint (SHA-256,
// base64url), which the IdP can compute from the public key too.
func KeyID(key creds.PrivateKey) (string, error) {
	jwk := jose.JSONWebKey{Key: key.Public()}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("upstream: client assertion key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// JWKS returns the public JSON Web Key Set of the private_key_jwt
// credentials among creds, each kid as the assertions carry it, for
// registering them with an IdP.
func JWKS(creds ...Credential) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, c := range creds {
		if c.Key.IsZero() {
			continue
		}
		jwk, err := publicJWK(c.Key, c.KeyID)
		if err != nil {
			return nil, err
		}
		set.Keys = append(set.Keys, jwk)
	}
	return json.MarshalIndent(set, "", "  ")
}
