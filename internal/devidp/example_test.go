package devidp_test

import (
	"context"
	"fmt"
	"log"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

func Example() {
	ctx := context.Background()
	client := devidp.NewClient()
	idp, err := devidp.Start(ctx, devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		log.Fatal(err)
	}
	defer idp.Close()

	cc := clientcredentials.Config{
		ClientID:     client.ID,
		ClientSecret: client.Secret,
		TokenURL:     idp.TokenURL(),
		Scopes:       []string{"read"},
	}
	tok, err := cc.Token(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.Type(), tok.Extra("scope"), idp.IssuedFor(client.ID))
	// Output: Bearer read 1
}
