package clientlib

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// grpcBackend talks to a broker over gRPC.
type grpcBackend struct {
	client tbv1.TokenBrokerServiceClient
	tenant string
	scopes []string
}

func (b *grpcBackend) getToken(ctx context.Context, minValid time.Duration) (rawToken, error) {
	return tokenOf(b.client.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: b.tenant, Scopes: b.scopes, MinValid: durationpb.New(minValid)}))
}

func (b *grpcBackend) invalidate(ctx context.Context, sha string) (rawToken, error) {
	return tokenOf(b.client.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: b.tenant, Scopes: b.scopes, TokenSha256: sha}))
}

// tokenOf is the token of a GetToken or InvalidateToken response.
func tokenOf(resp interface{ GetToken() *tbv1.Token }, err error) (rawToken, error) {
	if err != nil {
		return rawToken{}, err
	}
	return fromProto(resp.GetToken())
}

func (b *grpcBackend) watch(ctx context.Context) (stream, error) {
	st, err := b.client.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: b.tenant, Scopes: b.scopes})
	if err != nil {
		return nil, err
	}
	return grpcStream{st}, nil
}

func (b *grpcBackend) kind(err error) error { return statusKinds[status.Code(err)] }

type grpcStream struct {
	st grpc.ServerStreamingClient[tbv1.WatchTokenResponse]
}

func (g grpcStream) recv() (update, error) {
	m, err := g.st.Recv()
	if err != nil {
		return update{}, err
	}
	u := update{
		state:   m.GetStatus().GetState().String(),
		lastErr: m.GetStatus().GetLastError(),
		failing: m.GetStatus().GetState() == tbv1.TokenState_TOKEN_STATE_FAILING,
	}
	if m.GetToken() != nil {
		t, err := fromProto(m.GetToken())
		if err != nil {
			return update{}, err
		}
		u.tok = &t
	}
	return u, nil
}

func (grpcStream) close() {} // the stream ends with its context

func fromProto(p *tbv1.Token) (rawToken, error) {
	switch {
	case p.GetAccessToken() == "":
		return rawToken{}, errors.New("the broker sent a token without access_token")
	case p.GetExpireTime() == nil:
		return rawToken{}, errors.New("the broker sent a token without expire_time")
	}
	r := rawToken{access: p.GetAccessToken(), typ: p.GetTokenType(), expiry: p.GetExpireTime().AsTime()}
	if p.GetIssueTime() != nil {
		r.issued = p.GetIssueTime().AsTime()
	}
	return r, nil
}
