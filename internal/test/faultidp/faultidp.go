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
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf16"
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

	echo   echoMode                             // set by EchoJSON, EchoHTML, EchoEncoded, EchoAccessToken and MalformedEcho
	encode func(clientID, secret string) string // EchoEncoded's encoding
}

type echoMode int

const (
	noEcho echoMode = iota
	echoJSON
	echoHTML
	echoEncoded
	echoMalformed
	echoToken
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
	switch resp.echo {
	case noEcho:
	case echoMalformed:
		id, secret := credentialsOf(form, r)
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic(http.ErrAbortHandler)
		}
		c, bw, err := hj.Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		// A header line without a colon: net/http's error quotes it.
		_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nsecret " +
			url.QueryEscape(url.QueryEscape(secret)) + " raw " + secret + " id " + id + "\r\n\r\n")
		_ = bw.Flush()
		return
	case echoEncoded:
		id, secret := credentialsOf(form, r)
		resp = OAuthError(resp.Status, "invalid_request", "rejected "+resp.encode(id, secret)+" (see logs)")
	case echoToken:
		id, secret := credentialsOf(form, r)
		resp = OK(resp.encode(id, secret), 3600)
	default:
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

// EchoEncoded is an RFC 6749 error response (code invalid_request) whose
// error_description repeats the request's client credentials (from the
// form body or the Basic header) passed through encode, e.g. one of
// Encodings.
func EchoEncoded(status int, encode func(clientID, secret string) string) Response {
	return Response{Status: status, echo: echoEncoded, encode: encode}
}

// EchoAccessToken is a successful token response whose access_token is
// the request's client credentials passed through encode, as an endpoint
// that echoes its request might answer.
func EchoAccessToken(encode func(clientID, secret string) string) Response {
	return Response{echo: echoToken, encode: encode}
}

// MalformedEcho answers a malformed HTTP response whose header line
// quotes the secret (raw and double URL-escaped) without a colon, so that
// the client's transport error quotes it in turn.
func MalformedEcho() Response { return Response{echo: echoMalformed} }

// credentialsOf returns the client ID and secret of a token request; the
// client_assertion is the secret of a private_key_jwt request.
func credentialsOf(form url.Values, r *http.Request) (id, secret string) {
	if a := form.Get("client_assertion"); a != "" {
		return form.Get("client_id"), a
	}
	if u, p, ok := r.BasicAuth(); ok {
		// RFC 6749 §2.3.1: both are form-encoded inside the Basic header.
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
		return id, secret
	}
	return form.Get("client_id"), form.Get("client_secret")
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

// RedTeamSecret is the secret of the issue 7 red team: every character
// class that URL, JSON (PHP-style too), HTML and base64 encode
// differently, non-ASCII included.
const RedTeamSecret = `Qz9Kp/w+x=y&z%"<>ü€Vb7Lm`

// Encoding is one way an IdP may repeat a client's credentials.
type Encoding struct {
	Name   string
	Encode func(clientID, secret string) string
}

// Encodings are the ways the issue 7 red team saw (or could have seen) an
// IdP echo credentials: escaped once, twice or three times, PHP-style
// JSON, HTML entities, base64 of escaped forms, truncated.
var Encodings = []Encoding{
	{"raw", func(_, s string) string { return s }},
	{"upper case", func(_, s string) string { return strings.ToUpper(s) }},
	{"query-escaped", func(_, s string) string { return url.QueryEscape(s) }},
	{"double query-escaped", func(_, s string) string { return url.QueryEscape(url.QueryEscape(s)) }},
	{"triple query-escaped", func(_, s string) string { return url.QueryEscape(url.QueryEscape(url.QueryEscape(s))) }},
	{"lower-case double escaped", func(_, s string) string { return strings.ToLower(url.QueryEscape(url.QueryEscape(s))) }},
	{"PHP JSON", func(_, s string) string { return PHPJSON(s) }},
	{"PHP JSON of id:secret", func(id, s string) string { return PHPJSON(`{"client":"` + id + `","secret":"` + s + `"}`) }},
	{"HTML decimal entities", func(_, s string) string { return entities(s, "&#%d;") }},
	{"HTML hex entities", func(_, s string) string { return entities(s, "&#x%X;") }},
	{"HTML entities of the escaped secret", func(_, s string) string { return entities(url.QueryEscape(s), "&#%d;") }},
	{"base64 of the escaped secret", func(_, s string) string { return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(s))) }},
	{"base64url of id:escaped secret", func(id, s string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(id + ":" + url.QueryEscape(s)))
	}},
	{"truncated base64 of id:secret", func(id, s string) string {
		b := base64.StdEncoding.EncodeToString([]byte(id + ":" + s))
		return b[:len(b)-5]
	}},
	{"escaped base64 of the secret", func(_, s string) string { return url.QueryEscape(base64.StdEncoding.EncodeToString([]byte(s))) }},
	{"first 14 characters", func(_, s string) string { return string([]rune(s)[:14]) }},
	{"last 13 characters, escaped", func(_, s string) string { r := []rune(s); return url.QueryEscape(string(r[len(r)-13:])) }},
}

// PHPJSON is s as PHP's json_encode writes it by default: "/" as "\/",
// non-ASCII as \uXXXX, and (with JSON_HEX_*) &, <, > and quotes as \uXXXX.
func PHPJSON(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '/':
			b.WriteString(`\/`)
		case r == '\\':
			b.WriteString(`\\`)
		case r > 0x7e || strings.ContainsRune(`&<>"'`, r):
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&b, `\u%04x`, u)
			}
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// entities writes every non-alphanumeric character of s as an HTML
// numeric character reference in format (decimal or hex).
func entities(s, format string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, format, r)
		}
	}
	return b.String()
}

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
	for _, e := range Encodings {
		forms = append(forms, e.Encode(clientID, secret))
	}
	// Any 12 consecutive characters of the secret.
	if r := []rune(secret); len(r) >= 12 {
		for i := 0; i+12 <= len(r); i++ {
			forms = append(forms, string(r[i:i+12]))
		}
	}
	return slices.Compact(forms)
}
