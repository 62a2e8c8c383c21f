package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// devJWTClient makes a P-256 key and the dev IdP client that knows it by
// its public JWKS, as an operator registers `broker keys`' output.
func devJWTClient() (devidp.Client, creds.PrivateKey, error) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return devidp.Client{}, creds.PrivateKey{}, fmt.Errorf("daemon: development key: %w", err)
	}
	key, err := creds.NewPrivateKey(ec)
	if err != nil {
		return devidp.Client{}, creds.PrivateKey{}, fmt.Errorf("daemon: development key: %w", err)
	}
	jwks, err := upstream.JWKS(upstream.Credential{Key: key})
	if err != nil {
		return devidp.Client{}, creds.PrivateKey{}, fmt.Errorf("daemon: development key: %w", err)
	}
	return devidp.Client{ID: devidp.NewClient().ID + "-jwt", JWKS: jwks}, key, nil
}
