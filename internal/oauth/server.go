package oauth

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/flood"
	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// Paths the token endpoint answers on: the usual one, and Kognic's, so
// that KOGNIC_AUTH_SERVER (kognic-auth) can point at the broker.
const (
	Path       = "/oauth2/token"
	KognicPath = "/v1/auth/oauth/token"
)

// Broker is what the endpoint needs of *broker.Broker.
type Broker interface {
	Get(ctx context.Context, r broker.Request) (*broker.Token, error)
}

// Config configures a Server. Broker and Guard are required.
type Config struct {
	Broker Broker
	// Guard authenticates, authorizes, limits and audits every request
	// (guard.Guard.Token).
	Guard  *guard.Guard
	Logger *slog.Logger // the request log; nil discards it
	// Limits bound the body (max_message_bytes), the headers
	// (max_header_list_bytes, handshake_timeout) and idle connections;
	// serve on a listener with their connection caps.
	Limits limits.Limits
	// TLS, if set, is the gRPC listener's (authn.Reloader.TLSConfig).
	TLS *tls.Config
	// OnResult, if set, is called per request with "ok" or the error
	// answered. It must not block.
	OnResult func(result string)
}

// Timeouts no limit sets. The answer may wait for the identity provider.
const (
	readTimeout  = 10 * time.Second // the whole request, at least 5 s after its headers
	writeTimeout = 30 * time.Second
	slowRequest  = time.Second // a success this slow is logged at info
	abortGrace   = time.Second // Shutdown's wait after cancelling requests
)

// errShuttingDown is the cause of the requests Shutdown cancels.
var errShuttingDown = errors.New("oauth: shutting down")

// Server is the OAuth2 token endpoint: the client-credentials grant
// (RFC 6749 §4.4) over HTTP/1.1, in front of the broker's cache. It is
// safe for concurrent use.
type Server struct {
	broker   Broker
	guard    *guard.Guard
	log      *requestLog
	maxBody  int64
	onResult func(string)
	http     *http.Server
	tls      *tls.Config
	base     context.Context // every request's; abort ends it with errShuttingDown
	abort    context.CancelCauseFunc
}

// New returns a Server; it serves nothing until Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Broker == nil || cfg.Guard == nil {
		return nil, errors.New("oauth: Config.Broker and Config.Guard are required")
	}
	log := cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	l := cfg.Limits.WithDefaults()
	s := &Server{broker: cfg.Broker, guard: cfg.Guard, maxBody: int64(l.MaxMessageBytes), onResult: cfg.OnResult,
		log: &requestLog{log: log, limit: flood.New(flood.Config[string, struct{}]{Every: time.Second / logRate, Burst: logBurst, MaxKeys: 16})}}
	s.base, s.abort = context.WithCancelCause(context.Background())
	if cfg.TLS != nil {
		s.tls = http1Only(cfg.TLS)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true) // no HTTP/2, no h2c: one protocol whose limits are these
	s.http = &http.Server{
		Handler:                      http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout:            l.HandshakeTimeout,
		ReadTimeout:                  max(readTimeout, l.HandshakeTimeout+readTimeout/2),
		WriteTimeout:                 writeTimeout,
		IdleTimeout:                  l.MaxConnectionIdle,
		MaxHeaderBytes:               l.MaxHeaderListBytes,
		Protocols:                    &protocols,
		DisableGeneralOptionsHandler: true,
		BaseContext:                  func(net.Listener) context.Context { return s.base },
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelDebug), // TLS handshake errors and the like: peers' noise
	}
	return s, nil
}

// http1Only is c with ALPN offering http/1.1 (c may offer only h2).
func http1Only(c *tls.Config) *tls.Config {
	out := c.Clone()
	out.NextProtos = []string{"http/1.1"}
	if get := c.GetConfigForClient; get != nil {
		out.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			cc, err := get(h)
			if err != nil || cc == nil {
				return cc, err
			}
			cc = cc.Clone()
			cc.NextProtos = []string{"http/1.1"}
			return cc, nil
		}
	}
	return out
}

// Serve serves on lis (TLS if Config.TLS is set) until Shutdown or Close;
// it returns nil after them.
func (s *Server) Serve(lis net.Listener) error {
	if s.tls != nil {
		lis = tls.NewListener(lis, s.tls)
	}
	if err := s.http.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("oauth: %w", err)
	}
	return nil
}

// Drain turns keep-alive off, so that clients reconnect elsewhere;
// requests are still served.
func (s *Server) Drain() { s.http.SetKeepAlivesEnabled(false) }

// Shutdown stops accepting, lets requests in flight finish until ctx ends,
// then cancels them (503) and closes what is left a second later. It
// returns nil after a graceful stop, else ctx's error, wrapped.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	err := s.http.Shutdown(ctx)
	if err == nil {
		return nil
	}
	s.abort(errShuttingDown)
	gctx, cancel := context.WithTimeout(context.Background(), abortGrace)
	defer cancel()
	if s.http.Shutdown(gctx) != nil {
		_ = s.http.Close()
	}
	return fmt.Errorf("oauth: requests in flight did not finish in time and were ended: %w", err)
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.abort(errShuttingDown)
	return s.http.Close()
}

// response is the successful answer (RFC 6749 §5.1).
type response struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
}

// serveHTTP answers every request: a token request on Path or
// KognicPath, RFC 6749 §5.2 errors for everything else, each uncacheable
// (no ServeMux: its redirects and plain-text pages would not be).
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path != Path && r.URL.Path != KognicPath:
		writeError(w, newError(http.StatusNotFound, errInvalidRequest, "the token endpoint is %s (or %s)", Path, KognicPath))
	case len(r.TransferEncoding) > 0:
		// A token request is small and has a Content-Length; a chunked
		// body (with or without one) is a smuggling shape: refuse, close.
		w.Header().Set("Connection", "close")
		writeError(w, newError(http.StatusLengthRequired, errInvalidRequest, "send the body with a Content-Length, not chunked"))
	case r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Mode") != "":
		// No browser is a client of a token endpoint; a page must not
		// spend a caller's credentials or an open broker's tokens.
		writeError(w, newError(http.StatusForbidden, errInvalidRequest, "browsers are not served: call the token endpoint from a server-side client"))
	case s.guard.Open() && !authn.KnownHost(r.Host, nil):
		// Open mode authenticates nobody: a page that rebinds its name to
		// loopback must not read tokens.
		writeError(w, newError(http.StatusMisdirectedRequest, errInvalidRequest, "this broker has no callers and answers only to an IP address or localhost"))
	default:
		s.token(w, r)
	}
}

// token serves one token request: parse, guard.Token (which runs the
// broker's Get and audits), answer.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := r.Context()
	entry := logEntry{path: r.URL.Path, peer: authn.PeerOfConn(r.RemoteAddr, r.TLS)}
	tr, perr := parse(w, r, s.maxBody)
	entry.auth = tr.auth
	if tr.rawKey != "" && !s.guard.KnowsKey(tr.creds.Key) && s.guard.KnowsKey(tr.rawKey) {
		tr.creds.Key = tr.rawKey // Basic's secret sent without form-encoding
	}
	var tok *broker.Token
	var err error
	if perr != nil {
		err = perr
	} else {
		var c *guard.Caller
		c, err = s.guard.Token(ctx, guard.TokenRequest{Method: "POST " + r.URL.Path, Peer: entry.peer, Credentials: tr.creds, Tenant: tr.tenant, Scopes: tr.scopes},
			func(ctx context.Context, c *guard.Caller) (guard.Issued, error) {
				t, err := s.broker.Get(broker.WithOwner(ctx, c.Name), broker.Request{Tenant: tr.tenant, Scopes: tr.scopes})
				if err != nil {
					return guard.Issued{}, answer(ctx, err)
				}
				tok = t
				return guard.Issued{Fingerprint: t.SHA256()[:audit.FingerprintLen], Version: t.Version, Scopes: t.Scopes}, nil
			})
		if c != nil && c.Name != "" {
			entry.caller, entry.tenant = c.Name, tr.tenant
		}
	}
	if err != nil {
		e := answer(ctx, err)
		if e.Code == errInvalidClient && !tr.creds.KeySent && entry.peer.Cert == nil && !s.guard.Open() {
			// The guard's words name gRPC's header.
			e.Description = "no client authentication: send the client secret (an API key of this broker) with HTTP Basic or as client_secret in the form, or a client certificate"
		}
		writeError(w, e)
		entry.status, entry.result = e.Status, e.Code
	} else {
		writeToken(w, tok, time.Now())
		entry.status, entry.result = http.StatusOK, "ok"
	}
	if s.onResult != nil {
		s.onResult(entry.result)
	}
	entry.elapsed = time.Since(start)
	s.log.write(ctx, entry)
}

// noStore marks an answer uncacheable (RFC 6749 §5.1).
func noStore(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

// writeToken answers tok; expires_in counts whole seconds left at now.
func writeToken(w http.ResponseWriter, tok *broker.Token, now time.Time) {
	noStore(w.Header())
	_ = json.NewEncoder(w).Encode(response{
		AccessToken: tok.AccessToken, TokenType: tok.TokenType,
		ExpiresIn: max(int64(tok.Expiry.Sub(now)/time.Second), 0),
		Scope:     strings.Join(tok.Scopes, " "),
	})
}

// writeError answers e (RFC 6749 §5.2); every 401 names the Basic scheme.
func writeError(w http.ResponseWriter, e *Error) {
	h := w.Header()
	noStore(h)
	switch {
	case e.Status == http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Basic realm="tokenbroker"`)
	case e.Status == http.StatusMethodNotAllowed:
		h.Set("Allow", http.MethodPost)
	}
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10)) // rounded up
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{e.Code, e.Description})
}
