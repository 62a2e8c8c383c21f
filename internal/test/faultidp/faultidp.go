// Package faultidp is a scripted, fault-injecting OAuth2 token endpoint for
// tests: 5xx, 429, slow, hung and malformed answers that real servers will
// not give on demand. For well-behaved OAuth2 use internal/devidp instead.
//
// Every response is scripted: queued responses are served in order, then the
// default. A *Server is safe for concurrent use and must be closed.
package faultidp

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// TokenPath is the Kognic token endpoint path. The server answers any path.
const TokenPath = "/v1/auth/oauth/token"

// Response is one scripted answer.
type Response struct {
	Status int // default 200
	Header http.Header
	Body   string
	// Delay waits before answering. If the request is cancelled meanwhile,
	// nothing is written; if the server is closed, the connection is dropped.
	Delay time.Duration
	// Hang never answers: it blocks until the request is cancelled or the
	// server is closed, which drops the connection.
	Hang bool

	echo echoMode // set by EchoJSON and EchoHTML
}

type echoMode int

const (
	noEcho echoMode = iota
	echoJSON
	echoHTML
)

// Server is a loopback HTTP server answering with scripted responses.
type Server struct {
	srv       *httptest.Server
	closing   chan struct{}
	closeOnce sync.Once

	mu         sync.Mutex
	queue      []Response
	def        Response
	requests   int64
	inFlight   int
	lastForm   url.Values
	lastHeader http.Header
}

// Start starts a server on a random loopback port whose default response is
// OK("faultidp-token", 3600).
func Start() *Server {
	s := &Server{closing: make(chan struct{}), def: OK("faultidp-token", 3600)}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL returns the base URL, e.g. "http://127.0.0.1:34567".
func (s *Server) URL() string { return s.srv.URL }

// TokenURL returns URL()+TokenPath.
func (s *Server) TokenURL() string { return s.srv.URL + TokenPath }

// Push queues responses, served one per request in order.
func (s *Server) Push(r ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, r...)
}

// SetDefault sets the response used when the queue is empty.
func (s *Server) SetDefault(r Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = r
}

// Requests returns the number of requests received so far. A request is
// counted before it is answered.
func (s *Server) Requests() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// InFlight returns the number of requests not yet answered or abandoned,
// e.g. to check that a client's cancellation reached the server.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// LastRequest returns the body form and headers of the latest request,
// or nils if there was none.
func (s *Server) LastRequest() (form url.Values, header http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneValues(s.lastForm), s.lastHeader.Clone()
}

// Close unblocks hung and delayed requests, then shuts the server down and
// waits for its handlers. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.srv.Close()
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, _ := url.ParseQuery(string(raw))
	s.mu.Lock()
	s.requests++
	s.inFlight++
	s.lastForm, s.lastHeader = form, r.Header.Clone()
	resp := s.def
	if len(s.queue) > 0 {
		resp, s.queue = s.queue[0], s.queue[1:]
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()

	if resp.Hang || resp.Delay > 0 {
		var wait <-chan time.Time // nil: forever
		if !resp.Hang {
			t := time.NewTimer(resp.Delay)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-wait:
		case <-r.Context().Done():
			return
		case <-s.closing:
			panic(http.ErrAbortHandler) // drop the connection unanswered
		}
	}
	if resp.echo != noEcho {
		resp = echo(resp, raw, r)
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if resp.Status == 0 {
		resp.Status = http.StatusOK
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write([]byte(resp.Body))
}

// OK is a successful token response. expiresIn is marshalled as JSON (an int
// gives a number), omitted if nil, and used verbatim if a string or
// json.RawMessage, so OK("t", `"3600"`) sends a string.
func OK(accessToken string, expiresIn any) Response {
	tok, _ := json.Marshal(accessToken)
	fields := []string{`"access_token":` + string(tok), `"token_type":"Bearer"`}
	switch v := expiresIn.(type) {
	case nil:
	case string:
		fields = append(fields, `"expires_in":`+v)
	case json.RawMessage:
		fields = append(fields, `"expires_in":`+string(v))
	default:
		b, _ := json.Marshal(v)
		fields = append(fields, `"expires_in":`+string(b))
	}
	return jsonResponse(http.StatusOK, "{"+strings.Join(fields, ",")+"}")
}

// OAuthError is an RFC 6749 §5.2 error response; an empty description is
// omitted.
func OAuthError(status int, code, description string) Response {
	body := map[string]string{"error": code}
	if description != "" {
		body["error_description"] = description
	}
	b, _ := json.Marshal(body)
	return jsonResponse(status, string(b))
}

// TooManyRequests is a 429 with a Retry-After header (omitted if empty).
func TooManyRequests(retryAfter string) Response {
	r := Response{Status: http.StatusTooManyRequests, Body: "rate limited\n",
		Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}}
	if retryAfter != "" {
		r.Header.Set("Retry-After", retryAfter)
	}
	return r
}

// Redirect answers status (a 3xx) with a Location header.
func Redirect(status int, location string) Response {
	return Response{Status: status, Header: http.Header{"Location": {location}}}
}

// EchoJSON is an RFC 6749 error response (code invalid_client) whose
// error_description echoes the request: the raw form body and every header,
// Authorization included, as a careless IdP might.
func EchoJSON(status int) Response { return Response{Status: status, echo: echoJSON} }

// EchoHTML is an HTML error page that echoes the request body and headers.
func EchoHTML(status int) Response { return Response{Status: status, echo: echoHTML} }

func echo(resp Response, body []byte, r *http.Request) Response {
	var b strings.Builder
	b.WriteString("request body: ")
	b.Write(body)
	for k, v := range r.Header {
		b.WriteString("; " + k + ": " + strings.Join(v, ", "))
	}
	if resp.echo == echoHTML {
		return Response{Status: resp.Status, Header: http.Header{"Content-Type": {"text/html; charset=utf-8"}},
			Body: "<html><body><h1>Error</h1><pre>" + b.String() + "</pre></body></html>"}
	}
	return OAuthError(resp.Status, "invalid_client", b.String())
}

// Garbage is a 200 whose body is not JSON.
func Garbage() Response {
	return Response{Status: http.StatusOK, Body: "<html>not a token</html>",
		Header: http.Header{"Content-Type": {"text/html"}}}
}

func jsonResponse(status int, body string) Response {
	return Response{Status: status, Body: body, Header: http.Header{
		"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}}}
}

func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	return url.Values(http.Header(v).Clone())
}

// NastySecret holds the characters that URL, base64, JSON and HTML encode
// differently, for echo tests.
const NastySecret = `n4sty/se+cr=et&50%25"<x>`

// SecretForms returns every form in which an IdP that echoes its request
// (form body, Authorization: Basic) may repeat a client's credential:
// plain, URL-, JSON- and base64-encoded, alone and as "id:secret".
func SecretForms(clientID, secret string) []string {
	forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret), strings.ToLower(url.QueryEscape(secret))}
	j, _ := json.Marshal(secret)
	forms = append(forms, strings.Trim(string(j), `"`))
	for _, p := range []string{secret, clientID + ":" + secret, url.QueryEscape(clientID) + ":" + url.QueryEscape(secret)} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			forms = append(forms, enc.EncodeToString([]byte(p)))
		}
	}
	return forms
}
