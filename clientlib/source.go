package clientlib

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/names"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// ErrClosed is returned by a Source, and everything built on it, after
// Close.
var ErrClosed = errors.New("clientlib: source closed")

// ExtraTokenSHA256 is the key under which the tokens a Source returns carry
// the lower-case hex SHA-256 of their access token in oauth2.Token.Extra:
// the fingerprint by which the broker names a token without sending it.
const ExtraTokenSHA256 = "token_sha256"

// Source keeps the latest token of one tenant and scope set. It implements
// oauth2.TokenSource.
//
// A Source watches the broker's token stream and so holds a fresh token
// before the old one runs out; Token and TokenContext answer from memory,
// without touching the network and without allocating, while the cached
// token has the minimum validity left (see WithMinValid). While the stream
// is down the Source reconnects with exponential backoff and jitter, and
// fetches with GetToken when the cached token is due. It stops for good
// when the broker answers InvalidArgument, Unimplemented or NotFound (the
// tenant was removed); Token then returns that error.
//
// A Source is safe for concurrent use. It must be closed; Close stops its
// goroutines but leaves the gRPC connection, which belongs to the caller.
type Source struct {
	tenant string
	scopes []string
	cfg    sourceConfig
	be     backend
	log    *slog.Logger

	// state is the latest token or the error that stopped the Source. It is
	// replaced, never modified, under mu; readers load it without locking.
	state   atomic.Pointer[snapshot]
	updated chan struct{} // one pending notification at most
	ready   chan struct{} // closed at the first token or a fatal error

	// ctx is the Source's own context: it bounds every call the Source
	// makes on its own behalf and ends with Close.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu           sync.Mutex
	closed       bool
	readyClosed  bool
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

// token is a token as handed out: immutable, with everything the hot paths
// need precomputed.
type token struct {
	oauth      *oauth2.Token
	sha256     string
	authz      []string // the Authorization header value; never modified
	expiry     time.Time
	lifetime   time.Duration
	freshUntil time.Time // Token answers from the cache until then
	refreshAt  time.Time // after this, a newer token likely exists
}

func (t *token) valid(now time.Time) bool { return now.Before(t.expiry) }

// rawToken is a token as a backend receives it.
type rawToken struct {
	access, typ    string
	issued, expiry time.Time
}

// update is one message of a watch stream.
type update struct {
	tok     *rawToken // nil when the broker has no valid token
	failing bool      // the broker has no valid token and fetching fails
	state   string
	lastErr string
}

// call is one shared GetToken or InvalidateToken call.
type call struct {
	done chan struct{}
	tok  *token
	err  error
}

func newCall() *call { return &call{done: make(chan struct{})} }

func (c *call) finish(t *token, err error) {
	c.tok, c.err = t, err
	close(c.done)
}

// backend is how a Source talks to a broker: over gRPC, or to an
// in-process broker.Broker in direct mode.
type backend interface {
	getToken(ctx context.Context, minValid time.Duration) (rawToken, error)
	invalidate(ctx context.Context, sha256 string) (rawToken, error)
	watch(ctx context.Context) (stream, error)
	// permanent reports whether err ends the Source for good.
	permanent(err error) bool
	// startFatal reports whether err, before the first token, makes
	// NewSource fail at once rather than wait for its context.
	startFatal(err error) bool
}

// stream is an open watch. recv blocks until a message arrives, the stream
// ends, or the context given to watch ends.
type stream interface {
	recv() (update, error)
	close()
}

// NewSource returns a Source for the tenant's token from the broker at the
// other end of conn. It blocks until the first token arrives, the broker
// reports an error that will not go away by waiting (for example NotFound
// for an unknown tenant, or FailedPrecondition for credentials the identity
// provider rejects), or ctx ends; ctx bounds only this wait. The Source
// never uses ctx afterwards.
//
// conn is typically a *grpc.ClientConn; the Source does not close it.
func NewSource(ctx context.Context, conn grpc.ClientConnInterface, tenant string, opts ...SourceOption) (*Source, error) {
	if conn == nil {
		return nil, errors.New("clientlib: NewSource: conn is nil")
	}
	cfg := defaultSourceConfig()
	for _, o := range opts {
		o.applySource(&cfg)
	}
	if err := names.ValidTenant(tenant); err != nil {
		return nil, fmt.Errorf("clientlib: NewSource: %w", err)
	}
	scopes, err := names.NormalizeScopes(cfg.scopes)
	if err != nil {
		return nil, fmt.Errorf("clientlib: NewSource: WithScopes: %w", err)
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
	err := s.startErr
	s.mu.Unlock()
	if err == nil {
		err = s.state.Load().err
	}
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// Token returns a token valid for at least the minimum validity. It is
// TokenContext without a deadline of the caller's own; network calls are
// still bounded by WithRPCTimeout.
func (s *Source) Token() (*oauth2.Token, error) {
	return s.TokenContext(context.Background())
}

// TokenContext returns a token valid for at least the minimum validity
// (see WithMinValid). It answers from memory while the cached token is
// fresh enough; otherwise it asks the broker, coalesced with every other
// caller, and waits at most until ctx ends. If the broker cannot be reached
// but the cached token is still valid, it returns that token rather than an
// error.
//
// The returned token is shared: do not modify it. Its Extra holds the
// fingerprint under ExtraTokenSHA256.
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
	if t := st.tok; t != nil && time.Now().Before(t.freshUntil) {
		return t, nil
	}
	return s.fetch(ctx)
}

// fetch is current's slow path.
func (s *Source) fetch(ctx context.Context) (*token, error) {
	s.mu.Lock()
	c := s.startFetchLocked()
	s.mu.Unlock()
	done := false
	select {
	case <-c.done:
		done = true
	case <-ctx.Done():
	}
	st := s.state.Load()
	switch {
	case st.err != nil:
		return nil, st.err
	case done && c.err == nil:
		return c.tok, nil
	case st.tok != nil && st.tok.valid(time.Now()):
		// The broker cannot give a fresher token, but this one still works.
		return st.tok, nil
	case !done:
		return nil, s.noTokenError(ctx.Err())
	}
	return nil, c.err
}

// noTokenError explains why no token could be returned by the time ctx
// ended.
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
// new token, and when it stops for good. It holds one pending value at
// most, so a slow reader never blocks the Source; read the current state
// with Token. Meant for a single reader.
func (s *Source) Updated() <-chan struct{} { return s.updated }

// Invalidate reports that a resource server rejected tok, a token this
// Source returned, and returns its replacement. The broker fetches a new
// token only if tok is still its current one; concurrent reports of the
// same token make one InvalidateToken call, and a report of a token the
// Source has already replaced makes none. It waits at most until ctx ends.
// The replacement is tok itself when the broker could not fetch a new
// token and tok has not expired.
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

func (s *Source) invalidate(ctx context.Context, sha string) (*token, error) {
	s.mu.Lock()
	st := s.state.Load()
	if st.err != nil {
		s.mu.Unlock()
		return nil, st.err
	}
	s.rejectLocked(sha)
	if cur := st.tok; cur != nil && cur.sha256 != sha && cur.valid(time.Now()) && !s.isRejectedLocked(cur.sha256) {
		s.mu.Unlock()
		return cur, nil // already replaced
	}
	c := s.invalidating[sha]
	if c == nil {
		c = newCall()
		if s.closed {
			c.finish(nil, ErrClosed)
		} else {
			s.invalidating[sha] = c
			s.wg.Add(1)
			go s.runInvalidate(c, sha)
		}
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.tok, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("clientlib: tenant %q: waiting for a replacement token: %w", s.tenant, ctx.Err())
	}
}

// runInvalidate makes the shared InvalidateToken call on the Source's own
// context, so that no caller's cancellation fails it for the others.
func (s *Source) runInvalidate(c *call, sha string) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.rpcTimeout)
	raw, err := s.be.invalidate(ctx, sha)
	cancel()
	var t *token
	s.mu.Lock()
	delete(s.invalidating, sha)
	if err == nil {
		t = s.build(raw)
		s.adoptLocked(t, false)
	} else {
		err = s.failLocked("InvalidateToken", err)
	}
	s.mu.Unlock()
	c.finish(t, err)
	if err == nil {
		s.log.Info("token rejected by a resource server; replaced", "rejected", sha[:12], "replacement", t.sha256[:12])
	} else {
		s.log.Warn("token rejected by a resource server; no replacement", "rejected", sha[:12], "error", err)
	}
}

// startFetchLocked starts the shared GetToken call, or joins the one in
// flight.
func (s *Source) startFetchLocked() *call {
	if s.fetching != nil {
		return s.fetching
	}
	c := newCall()
	if s.closed {
		c.finish(nil, ErrClosed)
		return c
	}
	// Ask for what makes a token fresh here: the minimum validity, capped
	// at half the lifetime of the tokens seen, as the broker refuses
	// min_valid beyond its tokens' lifetime.
	minValid := s.cfg.minValid
	if t := s.state.Load().tok; t != nil && t.lifetime/2 > 0 {
		minValid = min(minValid, t.lifetime/2)
	}
	s.fetching = c
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.rpcTimeout)
		raw, err := s.be.getToken(ctx, minValid)
		cancel()
		var t *token
		s.mu.Lock()
		s.fetching = nil
		if err == nil {
			t = s.build(raw)
			s.adoptLocked(t, false)
		} else {
			err = s.failLocked("GetToken", err)
		}
		s.mu.Unlock()
		c.finish(t, err)
	}()
	return c
}

// Close stops the Source and waits for its goroutines. Afterwards Token
// returns ErrClosed. Close is idempotent and always returns nil; it does
// not close the gRPC connection given to NewSource.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.state.Store(&snapshot{err: ErrClosed})
		s.signalReadyLocked()
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// run keeps the watch stream open until the Source stops.
func (s *Source) run() {
	defer s.wg.Done()
	bo := newBackoff(s.cfg)
	for {
		received, err := s.watchOnce()
		if s.ctx.Err() != nil {
			return
		}
		if received {
			bo.Reset()
		}
		s.mu.Lock()
		err = s.failLocked("WatchToken", err)
		stopped := s.state.Load().err != nil
		due := s.dueLocked(time.Now())
		var c *call
		if !stopped && due {
			// Fall back to GetToken while the stream is down.
			c = s.startFetchLocked()
		}
		s.mu.Unlock()
		if stopped {
			return
		}
		s.log.Warn("token watch interrupted; reconnecting", "error", err)
		if c != nil {
			select {
			case <-c.done:
			case <-s.ctx.Done():
				return
			}
		}
		if !sleep(s.ctx, bo.NextBackOff()) {
			return
		}
	}
}

// watchOnce reads one watch stream until it ends, and reports whether it
// delivered any message.
func (s *Source) watchOnce() (received bool, err error) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	st, err := s.be.watch(ctx)
	if err != nil {
		return false, err
	}
	defer st.close()
	for {
		u, err := st.recv()
		if err != nil {
			return received, err
		}
		received = true
		s.apply(u)
	}
}

func (s *Source) apply(u update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.tok != nil {
		s.adoptLocked(s.build(*u.tok), true)
		return
	}
	if u.lastErr != "" {
		s.lastErr = fmt.Errorf("broker reports %s: %s", u.state, u.lastErr)
	}
	if u.failing && s.state.Load().tok == nil {
		// Ask, to learn whether the failure is one that waiting will not
		// cure (such as rejected credentials); the answer may end
		// NewSource.
		s.startFetchLocked()
	}
}

// build turns a received token into the form handed out.
func (s *Source) build(r rawToken) *token {
	now := time.Now()
	issued := r.issued
	if issued.IsZero() || !issued.Before(r.expiry) {
		issued = now
	}
	lifetime := r.expiry.Sub(issued)
	typ := r.typ
	if typ == "" {
		typ = "Bearer"
	}
	sha := broker.Fingerprint(r.access)
	o := (&oauth2.Token{AccessToken: r.access, TokenType: typ, Expiry: r.expiry}).
		WithExtra(map[string]any{ExtraTokenSHA256: sha})
	return &token{
		oauth:      o,
		sha256:     sha,
		authz:      []string{o.Type() + " " + r.access},
		expiry:     r.expiry,
		lifetime:   lifetime,
		freshUntil: r.expiry.Add(-min(s.cfg.minValid, lifetime/2)),
		refreshAt:  issued.Add(lifetime / 2),
	}
}

// adoptLocked makes t the current token unless it is a repeat, was
// rejected, or (when it is not from the watch stream, whose order is
// authoritative) is older than a fresh current token.
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

// failLocked records a failed call and returns the error for callers. An
// error that ends the Source for good stops it; one that NewSource should
// not wait out ends NewSource while no token has arrived.
func (s *Source) failLocked(op string, err error) error {
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("the broker ended the stream: %w", err)
	}
	wrapped := fmt.Errorf("clientlib: tenant %q: %s: %w", s.tenant, op, err)
	if s.closed {
		return ErrClosed
	}
	s.lastErr = fmt.Errorf("%s: %w", op, err)
	switch {
	case s.be.permanent(err):
		s.state.Store(&snapshot{err: wrapped})
		s.signalReadyLocked()
		s.notifyLocked()
		s.cancel() // ends the watch and calls in flight
		s.log.Error("token source stopped for good", "error", err)
	case s.state.Load().tok == nil && s.be.startFatal(err):
		if s.startErr == nil {
			s.startErr = wrapped
		}
		s.signalReadyLocked()
	}
	return wrapped
}

// dueLocked reports whether the Source should ask for a newer token.
func (s *Source) dueLocked(now time.Time) bool {
	t := s.state.Load().tok
	return t == nil || !now.Before(t.refreshAt) || !now.Before(t.freshUntil)
}

func (s *Source) signalReadyLocked() {
	if !s.readyClosed {
		s.readyClosed = true
		close(s.ready)
	}
}

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

func (s *Source) isRejectedLocked(sha string) bool {
	for _, r := range s.rejected {
		if r == sha {
			return true
		}
	}
	return false
}
