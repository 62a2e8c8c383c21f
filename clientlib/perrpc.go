package clientlib

import (
	"context"
	"fmt"
	"net/url"

	"golang.org/x/oauth2"
	"google.golang.org/grpc/credentials"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// PerRPCCredentials returns gRPC per-RPC credentials that put a token of
// src in every call's "authorization" metadata. Like grpc's
// credentials/oauth they require transport security (WithInsecureLoopback).
func PerRPCCredentials(src oauth2.TokenSource, opts ...PerRPCOption) credentials.PerRPCCredentials {
	p := &perRPC{src: src}
	for _, o := range opts {
		o.configurePerRPC(p)
	}
	return p
}

type perRPC struct {
	src           oauth2.TokenSource
	allowLoopback bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (p *perRPC) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	ri, _ := credentials.RequestInfoFromContext(ctx)
	if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
		if !p.allowLoopback || !loopbackURI(uri) {
			return nil, fmt.Errorf("%w: connection to %v: %v; use TLS, or WithInsecureLoopback for a loopback server",
				ErrInsecureTransport, uri, err)
		}
	}
	tok, err := tokenFrom(ctx, p.src)
	if err != nil {
		return nil, fmt.Errorf("clientlib: per-RPC credentials: %w", err)
	}
	return map[string]string{"authorization": tok.Type() + " " + tok.AccessToken}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (p *perRPC) RequireTransportSecurity() bool { return !p.allowLoopback }

// loopbackURI reports whether grpc's audience URIs name a loopback host.
func loopbackURI(uri []string) bool {
	if len(uri) == 0 {
		return false
	}
	for _, s := range uri {
		u, err := url.Parse(s)
		if err != nil || !upstream.IsLoopbackHost(u.Hostname()) {
			return false
		}
	}
	return true
}
