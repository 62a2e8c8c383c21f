package oauth_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/guard"
	"github.com/tokenbroker/tokenbroker/internal/oauth"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// A broker's token endpoint on loopback (open mode: no callers, so a
// loopback client needs no key), and x/oauth2 getting a token from it.
func ExampleServer() {
	ctx := context.Background()
	client := devidp.NewClient()
	idp, _ := devidp.Start(ctx, devidp.Config{Clients: []devidp.Client{client}})
	defer idp.Close()
	b, _ := broker.New(broker.Config{Tenants: []broker.Tenant{{Name: "acme", TokenURL: idp.TokenURL(), ClientID: client.ID, ClientSecret: creds.Secret(client.Secret)}}})
	defer b.Close()
	pol, _ := policy.New(nil)
	holder, _ := policy.NewHolder(pol)
	g, _ := guard.New(guard.Config{Policy: holder})
	srv, err := oauth.New(oauth.Config{Broker: b, Guard: g})
	if err != nil {
		fmt.Println(err)
		return
	}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)
	defer srv.Shutdown(ctx)

	cfg := clientcredentials.Config{ClientID: "acme", ClientSecret: "unused-in-open-mode", TokenURL: "http://" + lis.Addr().String() + oauth.Path}
	tok, err := cfg.Token(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok.TokenType, time.Until(tok.Expiry) > 59*time.Minute)
	// Output: Bearer true
}
