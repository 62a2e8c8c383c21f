package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/oauth"
)

// devIdPAddr is where serve --dev's identity provider listens if it can,
// so that the README's lines work; else on any port (the banner names it).
const devIdPAddr = "127.0.0.1:50053"

// startDev starts the development identity provider with two generated
// clients and adds their tenants to cfg: "demo" (a client secret) and
// "demo-jwt" (private_key_jwt with a key made at start).
func (d *Daemon) startDev(cfg *config.Config) error {
	if cfg.Listen != "" && !isLoopbackAddr(cfg.Listen) {
		return fmt.Errorf("daemon: --dev serves tokens to anyone who connects, so it listens on loopback only; %q is not a loopback address (try --listen 127.0.0.1:50051)", cfg.Listen)
	}
	client := devidp.NewClient()
	jwtClient, key, err := devJWTClient()
	if err != nil {
		return err
	}
	idpCfg := devidp.Config{Addr: devIdPAddr, Clients: []devidp.Client{client, jwtClient}, Logger: d.log}
	idp, err := devidp.Start(context.Background(), idpCfg)
	if err != nil {
		idpCfg.Addr = ""
		idp, err = devidp.Start(context.Background(), idpCfg)
	}
	if err != nil {
		return fmt.Errorf("daemon: start the development identity provider: %w", err)
	}
	d.idp = idp
	d.closers = append(d.closers, idp.Close)
	d.dev = []config.Tenant{{
		Name: "demo", TokenURL: idp.TokenURL(), ClientID: client.ID,
		ClientSecret: creds.Secret(client.Secret), AuthStyle: config.AuthStyleBody,
		CredentialsSource: "development identity provider",
	}, {
		Name: "demo-jwt", TokenURL: idp.TokenURL(), ClientID: jwtClient.ID,
		ClientKey: key, AuthStyle: config.AuthStylePrivateKeyJWT,
		CredentialsSource: "development identity provider (private_key_jwt)",
	}}
	cfg.Tenants = append(cfg.Tenants, d.dev...)
	// A second dev broker, or anything else on these ports, must not stop
	// it: take any port instead (the banner names them).
	cfg.Admin.Listen, cfg.OAuth.Listen = freeOr(cfg.Admin.Listen), freeOr(cfg.OAuth.Listen)
	return nil
}

// devJWTClient makes a P-256 key and the dev IdP client that knows it by
// its public JWKS, as an operator registers `broker keys`' output.
func devJWTClient() (devidp.Client, creds.PrivateKey, error) {
	var key creds.PrivateKey
	var jwks []byte
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err == nil {
		key, err = creds.NewPrivateKey(ec)
	}
	if err == nil {
		jwks, err = upstream.JWKS(upstream.Credential{Key: key})
	}
	if err != nil {
		return devidp.Client{}, creds.PrivateKey{}, fmt.Errorf("daemon: development key: %w", err)
	}
	return devidp.Client{ID: devidp.NewClient().ID + "-jwt", JWKS: jwks}, key, nil
}

// freeOr returns addr if it can be listened on now, else its host with
// port 0 (any free port); "" stays "".
func freeOr(addr string) string {
	if addr == "" {
		return ""
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		if host, _, serr := net.SplitHostPort(addr); serr == nil {
			return net.JoinHostPort(host, "0")
		}
		return addr
	}
	_ = lis.Close()
	return addr
}

// devBanner tells a developer what --dev started and how to try it.
func (d *Daemon) devBanner() string {
	idpURL := d.idp.URL()
	auth, secret := "Callers are authenticated and authorized by the config's callers.", "$API_KEY"
	if d.guard.Open() {
		auth, secret = "Every loopback caller may get tokens; nothing is authenticated.", "any-secret"
	}
	b := fmt.Sprintf(`
  *** DEVELOPMENT MODE — not for production ***
  Embedded identity provider: %s (tenants "demo" with a client secret and
  "demo-jwt" with private_key_jwt, credentials generated at start)
  %s

  Try:
`, idpURL, auth)
	if tcp := d.TCPAddr(); tcp != nil {
		addr := tcp.String()
		b += fmt.Sprintf(`    grpcurl -plaintext -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/GetToken
    grpcurl -plaintext -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/WatchToken
    go run ./cmd/broker token --addr %s --tenant demo --decode
    go run ./cmd/broker call get %s%s --addr %s --tenant demo
`, addr, addr, addr, idpURL, devidp.WhoamiPath, addr)
	}
	if socket := d.SocketPath(); socket != "" {
		b += fmt.Sprintf(`    grpcurl -plaintext -unix -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/GetToken
    go run ./cmd/broker token --addr unix://%s --tenant demo --decode
    go run ./cmd/broker call get %s%s --addr unix://%s --tenant demo
`, socket, socket, idpURL, devidp.WhoamiPath, socket)
	}
	b += "\n"
	if d.oauth != nil {
		b += fmt.Sprintf("  OAuth2 token endpoint (any OAuth2 client; client_id names the tenant, the secret is an API key):\n"+
			"    curl -s -u demo:%s -d grant_type=client_credentials http://%s%s\n\n", secret, d.OAuthAddr(), oauth.Path)
	}
	if d.admin != nil {
		b += fmt.Sprintf("  Status page and metrics: http://%s/ and http://%s/metrics\n\n", d.AdminAddr(), d.AdminAddr())
	}
	return b
}
