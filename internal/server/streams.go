package server

import (
	"context"
	"crypto/sha256"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// streamLimiter counts every open stream (unary calls too) per peer IP
// from the moment its HEADERS arrive, before any message: grpc-go reads
// the request message before any interceptor runs, so a peer that sends
// headers and never a message would otherwise hold a stream (and its
// metadata) without a single check. It runs as the server's InTapHandle,
// which grpc-go calls on the new stream's context (it carries the peer,
// with its verified TLS state) before creating the stream; the count is
// released by context.AfterFunc on the stream's context, which the
// transport cancels whenever the stream ends (finished, reset, deadline,
// or connection closed).
//
// Peers that present no credentials, and that the policy would not serve
// without them, get a lower cap than the others. A token RPC carrying an
// API key that does not verify is refused here, before any message.
type streamLimiter struct {
	authMax, anonMax int
	// access is Config.TenantAccess: asked for credential-less peers
	// only, to tell the open mode (which serves them) from a policy.
	access func(ctx context.Context) func(tenant string) bool
	// verify is Config.VerifyCredentials; nil counts any presented
	// credential as authenticated.
	verify func(ctx context.Context, header metadata.MD, fullMethod string) (context.Context, error)
	// denied is called for each stream refused for a bad API key.
	denied func()
	// keyMax caps the open streams of one verified API key over all peer
	// addresses, so that a caller cannot multiply authMax by its IPs.
	keyMax int

	mu    sync.Mutex
	n     map[string]int
	byKey map[[sha256.Size]byte]int
}

func (l *streamLimiter) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	ctx, authed, key, err := l.authenticated(ctx, info)
	if err != nil {
		if l.denied != nil {
			l.denied()
		}
		return nil, err
	}
	max := l.anonMax
	if authed {
		max = l.authMax
	}
	ip := peerIP(ctx)
	l.mu.Lock()
	ipOK := max < 0 || l.n[ip] < max && (l.n[ip] > 0 || len(l.n) < openStreamsPerIPMaxTracked)
	keyOK := key == nil || l.keyMax < 0 || l.byKey[*key] < l.keyMax && (l.byKey[*key] > 0 || len(l.byKey) < openStreamsPerIPMaxTracked)
	if ipOK && keyOK {
		if max >= 0 {
			l.n[ip]++
		}
		if key != nil && l.keyMax >= 0 {
			l.byKey[*key]++
		}
	}
	l.mu.Unlock()
	switch {
	case !ipOK:
		what, knob := "streams without credentials", "limits.max_anonymous_streams_per_ip"
		if authed {
			what, knob = "streams", "limits.max_streams_per_ip"
		}
		return nil, status.Errorf(codes.ResourceExhausted,
			"%s already has %d open %s, the limit per peer address (%s); finish or cancel some first", ip, max, what, knob)
	case !keyOK:
		return nil, status.Errorf(codes.ResourceExhausted,
			"this API key already has %d open streams, the limit per caller over all its addresses (limits.max_streams_per_api_key); finish or cancel some first", l.keyMax)
	}
	if max < 0 && (key == nil || l.keyMax < 0) {
		return ctx, nil
	}
	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		if max >= 0 {
			if l.n[ip]--; l.n[ip] <= 0 {
				delete(l.n, ip)
			}
		}
		if key != nil && l.keyMax >= 0 {
			if l.byKey[*key]--; l.byKey[*key] <= 0 {
				delete(l.byKey, *key)
			}
		}
		l.mu.Unlock()
	})
	return ctx, nil
}

// authenticated reports whether the stream's peer presented credentials
// (a verified client certificate, or an API key that verifies), or is one
// the policy serves without them (open mode). A token RPC whose API key
// does not verify is an error. For an API key that verified, key is its
// SHA-256, which stands for the caller in the per-key count.
//
// It returns the context for the stream: the verifier's, which may carry
// the verified key.
func (l *streamLimiter) authenticated(ctx context.Context, info *tap.Info) (_ context.Context, authed bool, key *[sha256.Size]byte, err error) {
	if verifiedClientCert(ctx) {
		return ctx, true, nil, nil
	}
	if auth := info.Header.Get("authorization"); len(auth) > 0 {
		if l.verify == nil || unauthenticatedService(info.FullMethodName) {
			return ctx, true, nil, nil
		}
		vctx, err := l.verify(ctx, info.Header, info.FullMethodName)
		if err != nil {
			return ctx, false, nil, err
		}
		// Counted by the key itself, never by the header's spelling: the
		// scheme is case-insensitive, and 64 spellings of "Bearer" must
		// not multiply the per-key cap (red team, issue 11).
		d, ok := guard.VerifiedKeyDigest(vctx)
		if !ok { // a verifier that does not hand the digest on
			k, _, _ := authn.BearerKey(metadata.NewIncomingContext(ctx, info.Header))
			d = authn.HashKey(k)
		}
		key := [sha256.Size]byte(d)
		return vctx, true, &key, nil
	}
	// Open mode serves credential-less (loopback) peers: an impossible
	// tenant name is allowed only by the allow-all of open mode.
	return ctx, l.access == nil || l.access(ctx)("\x00"), nil, nil
}

// verifiedClientCert reports whether the peer's TLS handshake verified a
// client certificate chain.
func verifiedClientCert(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && len(ti.State.VerifiedChains) > 0
}

// streamLimitOptions are the server options of l.
func (l *streamLimiter) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.InTapHandle(l.tap)}
}
