package devidp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/go-oauth2/oauth2/v4"
	oautherrors "github.com/go-oauth2/oauth2/v4/errors"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/server"
)

// TokenPath is the path of the token endpoint, as on Kognic's auth server.
const TokenPath = "/v1/auth/oauth/token"

// WhoamiPath is a resource endpoint for trying a token out: it answers a
// valid bearer token's client, scope and expiry, else 401.
const WhoamiPath = "/v1/whoami"

const (
	defaultAddr     = "127.0.0.1:0"
	defaultLifetime = time.Hour
)

// Config configures a Server. The zero value is usable: a server on a random
// loopback port with no clients and one-hour tokens.
type Config struct {
	Addr          string        // a loopback address; default "127.0.0.1:0"
	TokenLifetime time.Duration // default one hour
	Clients       []Client      // registered at start
	// Logger receives request logs, never secrets or tokens; nil discards.
	Logger *slog.Logger
}

// Server is a running identity provider. It is safe for concurrent use and
// must be closed.
type Server struct {
	url      string
	key      []byte // HS256 signing key
	log      *slog.Logger
	clients  *clientStore
	replay   *replayCache
	oauth    *server.Server
	http     *http.Server
	lifetime atomic.Int64 // time.Duration

	mu     sync.Mutex
	counts map[string]counts // by client id; "" for requests without one
	total  counts

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

type counts struct{ requests, issued int64 }

// Start starts a Server on cfg.Addr, serving in a goroutine; ctx bounds
// only the start-up.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg.Addr, cfg.Logger = cmp.Or(cfg.Addr, defaultAddr), cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	if cfg.TokenLifetime <= 0 {
		cfg.TokenLifetime = defaultLifetime
	}
	clients := &clientStore{clients: make(map[string]Client)}
	for _, c := range cfg.Clients {
		c, err := c.prepared()
		if err != nil {
			return nil, err
		}
		clients.set(c)
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("devidp: listen: %w", err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		_ = ln.Close()
		return nil, fmt.Errorf("devidp: listen address %s is not loopback", ln.Addr())
	}

	s := &Server{
		url:     "http://" + ln.Addr().String(),
		key:     []byte(randomHex(32)),
		log:     cfg.Logger,
		clients: clients,
		replay:  &replayCache{max: maxAssertionIDs, seen: map[string]time.Time{}},
		counts:  make(map[string]counts),
		done:    make(chan struct{}),
	}
	s.lifetime.Store(int64(cfg.TokenLifetime))

	mgr := manage.NewManager()
	mgr.SetClientTokenCfg(&manage.Config{AccessTokenExp: cfg.TokenLifetime})
	mgr.MapClientStorage(clients)
	mgr.MapTokenStorage(discardTokens{})
	mgr.MapAccessGenerate(&jwtAccess{issuer: s.url, key: s.key})

	s.oauth = server.NewServer(&server.Config{
		TokenType:         "Bearer",
		AllowedGrantTypes: []oauth2.GrantType{oauth2.ClientCredentials},
	}, mgr)
	s.oauth.SetClientInfoHandler(s.clientInfo)
	s.oauth.SetClientScopeHandler(s.authorize)
	s.oauth.SetResponseErrorHandler(rfc6749Status)
	s.oauth.SetInternalErrorHandler(func(err error) *oautherrors.Response {
		if ae, ok := errors.AsType[*assertionError](err); ok {
			return &oautherrors.Response{Error: ae.code, Description: ae.reason, StatusCode: oautherrors.StatusCodes[ae.code]}
		}
		s.log.Error("devidp: internal error", "error", err)
		return nil // server_error
	})

	mux := http.NewServeMux()
	mux.HandleFunc("POST "+TokenPath, s.handleToken)
	mux.HandleFunc("GET "+WhoamiPath, s.handleWhoami)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("devidp: serve", "error", err)
		}
	}()
	s.log.Info("devidp: started", "url", s.url, "clients", len(cfg.Clients))
	return s, nil
}

// URL returns the auth server base URL, e.g. "http://127.0.0.1:34567".
func (s *Server) URL() string { return s.url }

// TokenURL returns the token endpoint URL, URL()+TokenPath.
func (s *Server) TokenURL() string { return s.url + TokenPath }

// Close stops the server and its connections and waits for its goroutine.
// It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.http.Close()
		<-s.done
	})
	return s.closeErr
}

// AddClient registers c, replacing any client with the same id. It fails
// without an id, or without exactly one of a secret and a valid JWKS.
func (s *Server) AddClient(c Client) error {
	c, err := c.prepared()
	if err != nil {
		return err
	}
	s.clients.set(c)
	return nil
}

// RemoveClient unregisters a client; its later token requests fail with
// invalid_client. Tokens already issued stay valid.
func (s *Server) RemoveClient(id string) {
	s.clients.mu.Lock()
	defer s.clients.mu.Unlock()
	delete(s.clients.clients, id)
}

// SetTokenLifetime sets the lifetime of tokens issued from now on
// (non-positive: one hour).
func (s *Server) SetTokenLifetime(d time.Duration) {
	if d <= 0 {
		d = defaultLifetime
	}
	s.lifetime.Store(int64(d))
}

// Requests returns the number of token requests received, successful or
// not, each counted before its response is written.
func (s *Server) Requests() int64 { return s.countsFor(nil).requests }

// RequestsFor returns the number of token requests naming clientID,
// successful or not.
func (s *Server) RequestsFor(clientID string) int64 { return s.countsFor(&clientID).requests }

// Issued returns the number of tokens issued; Requests()-Issued() failed.
func (s *Server) Issued() int64 { return s.countsFor(nil).issued }

// IssuedFor returns the number of tokens issued to clientID.
func (s *Server) IssuedFor(clientID string) int64 { return s.countsFor(&clientID).issued }

// countsFor returns the counts of one client, or the totals if id is nil.
func (s *Server) countsFor(id *string) counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == nil {
		return s.total
	}
	return s.counts[*id]
}

// count adds one request, or one issued token, to id's counts and the totals.
func (s *Server) count(id string, issued bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counts[id]
	for _, p := range []*counts{&c, &s.total} {
		if issued {
			p.issued++
		} else {
			p.requests++
		}
	}
	s.counts[id] = c
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm() // errors surface as invalid_request from go-oauth2
	id := requestClient(r)
	s.count(id, false)
	rw := &recorder{ResponseWriter: w, onHeader: func(code int) {
		if code == http.StatusOK {
			s.count(id, true)
		}
	}}
	if err := s.oauth.HandleTokenRequest(rw, r); err != nil {
		s.log.Error("devidp: write token response", "client_id", id, "error", err)
	}
	level := slog.LevelDebug
	if rw.code != http.StatusOK {
		level = slog.LevelInfo
	}
	s.log.Log(r.Context(), level, "devidp: token request",
		"client_id", id, "grant_type", r.PostForm.Get("grant_type"),
		"scope", r.PostForm.Get("scope"), "status", rw.code)
}

// authorize is the ClientScopeHandler, which go-oauth2 calls before it
// authenticates the client: so it authenticates first, then checks the
// scopes and applies the current token lifetime.
func (s *Server) authorize(tgr *oauth2.TokenGenerateRequest) (bool, error) {
	c, ok := s.clients.get(tgr.ClientID)
	if !ok || !(clientInfo{c}).VerifyPassword(tgr.ClientSecret) {
		return false, oautherrors.ErrInvalidClient
	}
	scopes := strings.Fields(tgr.Scope)
	if !c.allows(scopes) {
		return false, nil // invalid_scope
	}
	tgr.Scope = strings.Join(scopes, " ")
	tgr.AccessTokenExp = time.Duration(s.lifetime.Load())
	return true, nil
}

// clientInfo rejects grants other than client_credentials, then reads the
// client credentials or verifies a client assertion.
func (s *Server) clientInfo(r *http.Request) (id, secret string, err error) {
	if oauth2.GrantType(r.PostForm.Get("grant_type")) != oauth2.ClientCredentials {
		return "", "", oautherrors.ErrUnsupportedGrantType
	}
	if r.PostForm.Has("client_assertion") || r.PostForm.Has("client_assertion_type") {
		return s.assertionClient(r)
	}
	return clientCredentials(r)
}

// requestClient names the client of a request for the counts: its
// client_id, else the unverified iss of its assertion.
func requestClient(r *http.Request) string {
	if id, _, err := clientCredentials(r); err == nil {
		return id
	}
	if tok, err := jwt.ParseSigned(r.PostForm.Get("client_assertion"), assertionAlgs); err == nil {
		var c jwt.Claims
		if tok.UnsafeClaimsWithoutVerification(&c) == nil {
			return c.Issuer
		}
	}
	return ""
}

// clientCredentials reads client_secret_basic (form-decoded, RFC 6749
// §2.3.1) if there is an Authorization header, else client_secret_post.
func clientCredentials(r *http.Request) (id, secret string, err error) {
	if r.Header.Get("Authorization") == "" {
		return server.ClientFormHandler(r)
	}
	id, secret, err = server.ClientBasicHandler(r)
	if err != nil {
		return "", "", err
	}
	if id, err = url.QueryUnescape(id); err != nil {
		return "", "", oautherrors.ErrInvalidClient
	}
	if secret, err = url.QueryUnescape(secret); err != nil {
		return "", "", oautherrors.ErrInvalidClient
	}
	return id, secret, nil
}

// rfc6749Status maps errors to RFC 6749 §5.2 status codes, which go-oauth2
// does not.
func rfc6749Status(re *oautherrors.Response) {
	switch re.Error {
	case oautherrors.ErrInvalidClient:
		re.StatusCode = http.StatusUnauthorized
		re.SetHeader("WWW-Authenticate", `Basic realm="devidp"`)
	case oautherrors.ErrServerError, oautherrors.ErrTemporarilyUnavailable:
	default:
		re.StatusCode = http.StatusBadRequest
	}
}

// recorder notes the status code and calls onHeader before it is sent.
type recorder struct {
	http.ResponseWriter
	code     int
	onHeader func(code int)
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
		r.onHeader(code)
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(b)
}
