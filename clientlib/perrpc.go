package clientlib

import (
	"context"
	"fmt"
	"net/url"

	"golang.org/x/oauth2"
	"google.golang.org/grpc/credentials"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// PerRPCCredentials returns gRPC per-RPC credentials that put a token of src
// in the "authorization" metadata of every call, for gRPC clients of
// services that accept the tenant's tokens. Use it with
// grpc.WithPerRPCCredentials.
//
// The credentials require transport security (TLS or equivalent), as grpc's
// credentials/oauth does, unless WithInsecureLoopback is given. If src has a
// TokenContext(context.Context) method, as *Source does, each call's
// context bounds waiting for a token.
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

// loopbackURI reports whether the audience URIs grpc passes name a loopback
// host (the call's :authority).
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
