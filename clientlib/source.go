package clientlib

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/names"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// Source keeps the latest token of one tenant and scope set from the
// broker's watch stream; it implements oauth2.TokenSource and Invalidator.
// Token answers from memory while the token has WithMinValid left; while
// the stream is down it reconnects with backoff and calls GetToken when
// due. It stops for good on ErrInvalidArgument, ErrUnknownTenant or a
// server that is not a broker. Safe for concurrent use; it must be closed.
type Source struct {
	tenant string
	scopes []string
	cfg    sourceConfig
	be     backend
	log    *slog.Logger

	// state is replaced, never modified, under mu; readers need no lock.
	state   atomic.Pointer[snapshot]
	updated chan struct{} // one pending notification at most
	ready   chan struct{} // closed at the first token or a fatal error

	// ctx bounds every call the Source makes and ends with Close; wg
	// counts the goroutines, none added once closed is set.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu           sync.Mutex // the lifecycle and the calls
	closed       bool
	readyOnce    sync.Once
	startErr     error // a failure that ends NewSource before any token
	lastErr      error // the last failure, "op: cause", for messages
	fetching     *call
	invalidating map[string]*call // by the rejected token's fingerprint
	rejected     [8]string        // ring of recently rejected fingerprints
	nextRejected int
}

type snapshot struct {
	tok *token
	err error // non-nil once the Source stopped for good or was closed
}

// NewSource returns a Source for the tenant's token from the broker at the
// other end of conn, which it does not close. It blocks until the first
// token, an error that waiting will not cure (ErrUnknownTenant,
// ErrPermissionDenied, ErrCredentialsRejected, ErrInvalidArgument), or the
// end of ctx, whose error then also wraps the last failure. The Source
// never uses ctx afterwards.
func NewSource(ctx context.Context, conn grpc.ClientConnInterface, tenant string, opts ...SourceOption) (*Source, error) {
	if conn == nil {
		return nil, errors.New("clientlib: NewSource: conn is nil")
	}
	cfg := defaultSourceConfig()
	for _, o := range opts {
		o.configureSource(&cfg)
	}
	return newSource(ctx, conn, tenant, cfg)
}

func newSource(ctx context.Context, conn grpc.ClientConnInterface, tenant string, cfg sourceConfig) (*Source, error) {
	if err := names.ValidTenant(tenant); err != nil {
		return nil, withKind(ErrInvalidArgument, fmt.Errorf("clientlib: NewSource: %w", err))
	}
	scopes, err := names.NormalizeScopes(cfg.scopes)
	if err != nil {
		return nil, withKind(ErrInvalidArgument, fmt.Errorf("clientlib: NewSource: WithScopes: %w", err))
	}
	be := &grpcBackend{client: tbv1.NewTokenBrokerServiceClient(conn), tenant: tenant, scopes: scopes}
	return startSource(ctx, be, tenant, scopes, cfg)
}

func startSource(ctx context.Context, be backend, tenant string, scopes []string, cfg sourceConfig) (*Source, error) {
	s := &Source{
		tenant:       tenant,
		scopes:       scopes,
		cfg:          cfg,
		be:           be,
		log:          cfg.logger.With("tenant", tenant, "scopes", scopes),
		updated:      make(chan struct{}, 1),
		ready:        make(chan struct{}),
		invalidating: map[string]*call{},
	}
	s.state.Store(&snapshot{})
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.run()

	select {
	case <-s.ready:
	case <-ctx.Done():
		err := s.noTokenError(ctx.Err())
		_ = s.Close()
		return nil, err
	}
	s.mu.Lock()
	err := cmp.Or(s.startErr, s.state.Load().err)
	s.mu.Unlock()
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// Token is TokenContext without a deadline of the caller's (WithRPCTimeout
// still bounds calls).
func (s *Source) Token() (*oauth2.Token, error) {
	return s.TokenContext(context.Background())
}

// TokenContext returns a token valid for at least the minimum validity, from
// memory, else from one call shared by every caller, waiting at most for ctx;
// a still valid cached token beats an error. Do not modify the token.
func (s *Source) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	t, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	return t.oauth, nil
}

// current is TokenContext returning the internal token.
func (s *Source) current(ctx context.Context) (*token, error) {
	st := s.state.Load()
	if st.err != nil {
		return nil, st.err
	}
	if t := st.tok; t != nil && nowMicros() < t.freshUntilMicros {
		return t, nil
	}
	return s.fetch(ctx)
}

// nowMicros reads the wall clock for the cached path; tests replace it.
var nowMicros = wallMicros

// noTokenError explains why no token came before ctx ended.
func (s *Source) noTokenError(ctxErr error) error {
	s.mu.Lock()
	last := s.lastErr
	s.mu.Unlock()
	if last == nil {
		return fmt.Errorf("clientlib: tenant %q: no token yet: %w", s.tenant, ctxErr)
	}
	return fmt.Errorf("clientlib: tenant %q: no token yet: %w; last error: %w", s.tenant, ctxErr, last)
}

// Updated returns a channel that receives a value after the Source adopts a
// new token or stops; it holds one pending value at most. For one reader.
func (s *Source) Updated() <-chan struct{} { return s.updated }

// Invalidate implements Invalidator with one InvalidateToken call for
// concurrent reports of one token, none for one already replaced; it
// returns tok itself if the broker has no newer token and tok is valid.
func (s *Source) Invalidate(ctx context.Context, tok *oauth2.Token) (*oauth2.Token, error) {
	if tok == nil || tok.AccessToken == "" {
		return nil, errors.New("clientlib: Invalidate: no token given")
	}
	sha, _ := tok.Extra(ExtraTokenSHA256).(string)
	if sha == "" {
		sha = broker.Fingerprint(tok.AccessToken)
	}
	t, err := s.invalidate(ctx, sha)
	if err != nil {
		return nil, err
	}
	return t.oauth, nil
}

// Close stops the Source and waits for its goroutines, also when called
// again; afterwards Token returns ErrClosed. It returns nil: the Source
// owns no connection.
func (s *Source) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.state.Store(&snapshot{err: ErrClosed})
		s.signalReadyLocked()
		s.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait() // no goroutine starts once closed is set
	return nil
}

// adoptLocked makes t the current token unless it is a repeat, was
// rejected, or (not from the watch stream, whose order is authoritative)
// is older than a fresh current token.
func (s *Source) adoptLocked(t *token, fromWatch bool) {
	st := s.state.Load()
	if st.err != nil {
		return
	}
	if cur := st.tok; cur != nil {
		now := time.Now()
		curGood := cur.valid(now) && !s.isRejectedLocked(cur.sha256)
		switch {
		case cur.sha256 == t.sha256:
			return
		case curGood && s.isRejectedLocked(t.sha256):
			return
		case curGood && !fromWatch && t.expiry.Before(cur.expiry) && now.Before(cur.freshUntil):
			return
		}
	}
	s.state.Store(&snapshot{tok: t})
	s.lastErr = nil
	s.signalReadyLocked()
	s.notifyLocked()
}

// failLocked records a failed call and returns the error for callers; it
// stops the Source or ends NewSource on the errors that say so.
func (s *Source) failLocked(op string, err error) error {
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("the broker ended the stream: %w", err)
	}
	err = withKind(s.be.kind(err), err)
	wrapped := fmt.Errorf("clientlib: tenant %q: %s: %w", s.tenant, op, err)
	if s.closed {
		return ErrClosed
	}
	s.lastErr = fmt.Errorf("%s: %w", op, err)
	switch {
	case permanent(err):
		s.state.Store(&snapshot{err: wrapped})
		s.signalReadyLocked()
		s.notifyLocked()
		s.cancel() // ends the watch and calls in flight
		s.log.Error("token source stopped for good", "error", err)
	case s.state.Load().tok == nil && (startFatal(err) || s.cfg.failFast && lasting(err)):
		if s.startErr == nil {
			s.startErr = wrapped
		}
		s.signalReadyLocked()
	}
	return wrapped
}

func (s *Source) signalReadyLocked() { s.readyOnce.Do(func() { close(s.ready) }) }

func (s *Source) notifyLocked() {
	select {
	case s.updated <- struct{}{}:
	default:
	}
}

func (s *Source) rejectLocked(sha string) {
	if s.isRejectedLocked(sha) {
		return
	}
	s.rejected[s.nextRejected] = sha
	s.nextRejected = (s.nextRejected + 1) % len(s.rejected)
}

func (s *Source) isRejectedLocked(sha string) bool { return slices.Contains(s.rejected[:], sha) }
