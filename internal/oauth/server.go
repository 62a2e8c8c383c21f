package oauth

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
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
	// Guard authenticates, authorizes, limits and audits every request,
	// as it does gRPC calls (guard.Guard.Token).
	Guard *guard.Guard
	// Logger receives the request log; nil discards it.
	Logger *slog.Logger
	// Limits bound requests (zero fields: the defaults): the body
	// (max_message_bytes), the headers (max_header_list_bytes), the time
	// to send them, TLS handshake included (handshake_timeout), and an
	// idle connection (max_connection_idle). Serve on a listener with
	// their connection caps (server.LimitListener).
	Limits limits.Limits
	// TLS, if set, is the listener's TLS (authn.Reloader.TLSConfig: the
	// gRPC listener's certificate and client CAs); nil serves plaintext.
	TLS *tls.Config
	// OnResult, if set, is called once per token request with "ok" or
	// the RFC 6749 error answered, e.g. to count them. It must not block.
	OnResult func(result string)
}

// The timeouts that no limit sets: reading a whole request (its headers
// have handshake_timeout; the body gets at least 5 s more), and writing
// the answer, which may wait for the identity provider
// (broker.Config.FetchTimeout, 10 s by default).
const (
	readTimeout  = 10 * time.Second
	writeTimeout = 30 * time.Second
	// slowRequest is when a successful request is logged at info.
	slowRequest = time.Second
	// abortGrace is how long Shutdown waits, after cancelling the
	// requests still running, before it closes their connections.
	abortGrace = time.Second
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
	// base is every request's base context, cancelled with
	// errShuttingDown when Shutdown's time is up.
	base  context.Context
	abort context.CancelCauseFunc
}

// New returns a Server; it serves nothing until Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Broker == nil || cfg.Guard == nil {
		return nil, errors.New("oauth: Config.Broker and Config.Guard are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := cfg.Limits.WithDefaults()
	s := &Server{broker: cfg.Broker, guard: cfg.Guard, log: newRequestLog(log), maxBody: int64(l.MaxMessageBytes), onResult: cfg.OnResult}
	s.base, s.abort = context.WithCancelCause(context.Background())
	if cfg.TLS != nil {
		s.tls = http1Only(cfg.TLS)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(Path, s.token)
	mux.HandleFunc(KognicPath, s.token)
	var protocols http.Protocols
	protocols.SetHTTP1(true) // no HTTP/2, no h2c: one protocol whose limits are these
	s.http = &http.Server{
		Handler:                      mux,
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

// http1Only is c for HTTP/1.1: the same certificate and client CAs at
// every handshake, with ALPN offering http/1.1 (c may offer only h2, for
// gRPC).
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

// Drain asks clients to reconnect (no more keep-alive), so that a load
// balancer moving them away from this replica takes effect; requests
// are still served.
func (s *Server) Drain() { s.http.SetKeepAlivesEnabled(false) }

// Shutdown stops accepting, lets requests in flight finish until ctx
// ends, then cancels them (they answer 503 temporarily_unavailable) and
// closes what is left a second later. It returns nil after a graceful
// stop, else ctx's error, wrapped.
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

// token serves one token request: parse, then guard.Token (authenticate,
// admit, authorize, limit, the broker's cache, audit), then the answer.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := r.Context()
	entry := logEntry{path: r.URL.Path, peer: authn.PeerOfConn(r.RemoteAddr, r.TLS)}
	tr, perr := parse(w, r, s.maxBody)
	entry.auth = tr.auth
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

// writeError answers e (RFC 6749 §5.2). Every 401 names the Basic scheme
// (RFC 7235 §3.1; RFC 6749 §5.2 requires it when Basic was used).
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
		h.Set("Retry-After", retryAfterHeader(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{e.Code, e.Description})
}
