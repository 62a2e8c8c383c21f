package server

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
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
	verify func(ctx context.Context, fullMethod string) error
	// denied is called for each stream refused for a bad API key.
	denied func()

	mu sync.Mutex
	n  map[string]int
}

func (l *streamLimiter) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	authed, err := l.authenticated(ctx, info)
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
	if max < 0 {
		return ctx, nil
	}
	ip := peerIP(ctx)
	l.mu.Lock()
	ok := l.n[ip] < max && (l.n[ip] > 0 || len(l.n) < openStreamsPerIPMaxTracked)
	if ok {
		l.n[ip]++
	}
	l.mu.Unlock()
	if !ok {
		what := "streams without credentials"
		if authed {
			what = "streams"
		}
		return nil, status.Errorf(codes.ResourceExhausted,
			"%s already has %d open %s, the limit per peer address; finish or cancel some first", ip, max, what)
	}
	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		if l.n[ip]--; l.n[ip] <= 0 {
			delete(l.n, ip)
		}
		l.mu.Unlock()
	})
	return ctx, nil
}

// authenticated reports whether the stream's peer presented credentials
// (a verified client certificate, or an API key that verifies), or is one
// the policy serves without them (open mode). A token RPC whose API key
// does not verify is an error.
func (l *streamLimiter) authenticated(ctx context.Context, info *tap.Info) (bool, error) {
	if verifiedClientCert(ctx) {
		return true, nil
	}
	if len(info.Header.Get("authorization")) > 0 {
		if l.verify == nil || unauthenticatedService(info.FullMethodName) {
			return true, nil
		}
		if err := l.verify(metadata.NewIncomingContext(ctx, info.Header), info.FullMethodName); err != nil {
			return false, err
		}
		return true, nil
	}
	// Open mode serves credential-less (loopback) peers: an impossible
	// tenant name is allowed only by the allow-all of open mode.
	return l.access == nil || l.access(ctx)("\x00"), nil
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

// everySecond returns a func that counts calls and reports the count to
// report at most once a second (a flood of refusals must not flood the
// logs); it never blocks on report.
func everySecond(report func(n int64)) func() {
	var (
		mu      sync.Mutex
		n       int64
		pending bool
	)
	return func() {
		mu.Lock()
		defer mu.Unlock()
		n++
		if pending {
			return
		}
		pending = true
		time.AfterFunc(time.Second, func() {
			mu.Lock()
			c := n
			n, pending = 0, false
			mu.Unlock()
			report(c)
		})
	}
}
