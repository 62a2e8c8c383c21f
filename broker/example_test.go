package broker_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// A broker serving one tenant, fetching from the development identity
// provider on a loopback port.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := devidp.NewClient()
	idp, err := devidp.Start(ctx, devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		log.Fatal(err)
	}
	defer idp.Close()

	b, err := broker.New(broker.Config{Tenants: []broker.Tenant{{
		Name:         "acme",
		TokenURL:     idp.TokenURL(),
		ClientID:     client.ID,
		ClientSecret: creds.Secret(client.Secret),
		Scopes:       []string{"read"},
	}}})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	tok, err := b.Get(ctx, broker.Request{Tenant: "acme"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.Tenant, tok.TokenType, tok.Scopes, time.Until(tok.Expiry) > 50*time.Minute)

	// A second call is served from the cache: the same token.
	again, err := b.Get(ctx, broker.Request{Tenant: "acme", Scopes: []string{"read", "read"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(again.Version == tok.Version)
	// Output:
	// acme Bearer [read] true
	// true
}
