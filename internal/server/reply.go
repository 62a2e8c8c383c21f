package server

import (
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec wrapped here
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// reply is a response that hands out a token, made once per token (per
// update, for WatchToken) and shared, never modified: the message the
// interceptors see, its encoding the codec sends as is, and the token's
// audit fingerprint the guard reads (guard.Fingerprinted).
type reply struct {
	proto.Message // *tbv1.GetTokenResponse, InvalidateTokenResponse or WatchTokenResponse
	token         *tbv1.Token
	fingerprint   string
	wire          mem.BufferSlice // the encoding; nil if marshalling failed: the codec's Marshal reports it
}

func (r *reply) GetToken() *tbv1.Token    { return r.token }
func (r *reply) TokenFingerprint() string { return r.fingerprint }

func newReply(m proto.Message, tok *tbv1.Token, fingerprint string) *reply {
	r := &reply{Message: m, token: tok, fingerprint: fingerprint}
	if b, err := proto.Marshal(m); err == nil {
		// Read-only and never freed into a pool: grpc-go copies (or
		// compresses) it into the frames it writes, and SliceBuffer's
		// Ref and Free do nothing, so every send can share it.
		r.wire = mem.BufferSlice{mem.SliceBuffer(b)}
	}
	return r
}

// fingerprint is tok's audit fingerprint, from the SHA-256 the broker
// computed when the token arrived.
func fingerprint(tok *broker.Token) string { return tok.SHA256()[:audit.FingerprintLen] }

// tokenReply is the GetToken reply of tok, made once per token.
func tokenReply(tok *broker.Token) *reply {
	return tok.Shared(func() any {
		p := toProto(tok)
		return newReply(&tbv1.GetTokenResponse{Token: p}, p, fingerprint(tok))
	}).(*reply)
}

// invalidateReply is the InvalidateToken reply of tok: GetToken's token
// and encoding, which are InvalidateTokenResponse's too (both messages
// are only field 1, the token; TestInvalidateReplyEncoding checks it).
func invalidateReply(tok *broker.Token) *reply {
	r := *tokenReply(tok)
	r.Message = &tbv1.InvalidateTokenResponse{Token: r.token}
	return &r
}

// watchReply is u as a WatchToken message, made once for every stream
// the broker delivers the same update to (broker.Update.Shared).
func watchReply(u broker.Update) *reply {
	return u.Shared(func() any {
		m, fp := toWatchResponse(u), ""
		if u.Token != nil {
			fp = fingerprint(u.Token)
		}
		return newReply(m, m.GetToken(), fp)
	}).(*reply)
}

// codec is grpc-go's proto codec, except that a reply is sent as its
// encoding, made once (like a grpc.PreparedMsg, which would hide the
// message from the interceptors, the guard's audit among them).
type codec struct{ encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*reply); ok && r.wire != nil {
		return r.wire, nil
	}
	return c.CodecV2.Marshal(v)
}

// serviceDesc is TokenBrokerService's, with GetToken and InvalidateToken
// answering a *reply, which the generated handlers' types cannot carry.
func (s *Server) serviceDesc() *grpc.ServiceDesc {
	d := tbv1.TokenBrokerService_ServiceDesc
	d.Methods = slices.Clone(d.Methods)
	for i, m := range d.Methods {
		switch m.MethodName {
		case "GetToken":
			d.Methods[i].Handler = unaryHandler(s, tbv1.TokenBrokerService_GetToken_FullMethodName, s.getToken)
		case "InvalidateToken":
			d.Methods[i].Handler = unaryHandler(s, tbv1.TokenBrokerService_InvalidateToken_FullMethodName, s.invalidateToken)
		}
	}
	return &d
}

// unaryHandler is the generated handler of a unary method of srv, for h,
// with its UnaryServerInfo made once instead of per call.
func unaryHandler[Req any](srv any, method string, h func(context.Context, *Req) (*reply, error)) grpc.MethodHandler {
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: method}
	call := func(ctx context.Context, req any) (any, error) {
		r, err := h(ctx, req.(*Req))
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	return func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(Req)
		if err := dec(in); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return call(ctx, in)
		}
		return interceptor(ctx, in, info, call)
	}
}

func toProto(t *broker.Token) *tbv1.Token {
	return &tbv1.Token{
		AccessToken: t.AccessToken,
		TokenType:   t.TokenType,
		ExpireTime:  timestamppb.New(t.Expiry),
		IssueTime:   timestamppb.New(t.IssuedAt),
		Scopes:      t.Scopes,
		Tenant:      t.Tenant,
		Version:     t.Version,
	}
}

func toStatusProto(st broker.Status) *tbv1.TokenStatus {
	p := &tbv1.TokenStatus{State: stateProto[st.State]}
	if st.LastError != nil {
		p.LastError = st.LastError.Error()
	}
	if !st.NextRefresh.IsZero() {
		p.NextRefreshTime = timestamppb.New(st.NextRefresh)
	}
	return p
}

var stateProto = map[broker.State]tbv1.TokenState{
	broker.StatePending: tbv1.TokenState_TOKEN_STATE_PENDING,
	broker.StateReady:   tbv1.TokenState_TOKEN_STATE_READY,
	broker.StateStale:   tbv1.TokenState_TOKEN_STATE_STALE,
	broker.StateFailing: tbv1.TokenState_TOKEN_STATE_FAILING,
}

func toWatchResponse(u broker.Update) *tbv1.WatchTokenResponse {
	r := &tbv1.WatchTokenResponse{Status: toStatusProto(u.Status)}
	if u.Token != nil {
		r.Token = toProto(u.Token)
	}
	return r
}
