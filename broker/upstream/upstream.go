// Package upstream fetches access tokens from an identity provider with the
// OAuth 2.0 client-credentials grant, and classifies its failures.
//
// It wraps golang.org/x/oauth2/clientcredentials: the client authentication
// style is fixed per client (never auto-probed), every request runs on the
// caller's context, and errors never carry the client secret or the response
// body.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenbroker/tokenbroker/broker/credentials"
)

// Config describes one OAuth 2.0 client at one token endpoint.
type Config struct {
	// TokenURL is the identity provider's token endpoint.
	TokenURL string
	// ClientID and ClientSecret authenticate the client.
	ClientID     string
	ClientSecret credentials.Secret
	// AuthStyle is oauth2.AuthStyleInParams (client_secret_post, the
	// default when zero) or oauth2.AuthStyleInHeader (client_secret_basic).
	AuthStyle oauth2.AuthStyle
	// HTTPClient sends the requests; nil means a client with sane timeouts.
	HTTPClient *http.Client
	// UserAgent, when set, is sent on every request.
	UserAgent string
}

// Client fetches tokens for one configured client. It is safe for
// concurrent use.
type Client struct {
	cfg    clientcredentials.Config
	secret credentials.Secret
	http   *http.Client
}

// Grant is a token endpoint's successful answer.
type Grant struct {
	AccessToken string
	TokenType   string
	// ExpiresIn is the reported lifetime; zero or negative when the
	// response had no usable expires_in.
	ExpiresIn time.Duration
	// ExpiresInSet reports that the response carried an expires_in at all,
	// telling a stated zero apart from a missing value.
	ExpiresInSet bool
	// Scope is the granted scope as reported, if any.
	Scope string
}

// String redacts the access token.
func (g Grant) String() string {
	return fmt.Sprintf("upstream.Grant{TokenType:%q ExpiresIn:%s AccessToken:[REDACTED]}", g.TokenType, g.ExpiresIn)
}

// GoString redacts the access token.
func (g Grant) GoString() string { return g.String() }

// Format redacts the access token in every verb.
func (g Grant) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(g.String())) }

// LogValue redacts the access token.
func (g Grant) LogValue() slog.Value {
	return slog.GroupValue(slog.String("token_type", g.TokenType), slog.Duration("expires_in", g.ExpiresIn))
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.TokenURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("upstream: token URL %q: must be an absolute http(s) URL", cfg.TokenURL)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("upstream: client ID is empty")
	}
	if cfg.ClientSecret.Reveal() == "" {
		return nil, errors.New("upstream: client secret is empty")
	}
	style := cfg.AuthStyle
	switch style {
	case oauth2.AuthStyleAutoDetect:
		style = oauth2.AuthStyleInParams
	case oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader:
	default:
		return nil, fmt.Errorf("upstream: unknown auth style %d", style)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.UserAgent != "" {
		base := hc.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		c := *hc
		c.Transport = userAgentTransport{base: base, ua: cfg.UserAgent}
		hc = &c
	}
	return &Client{
		cfg: clientcredentials.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret.Reveal(),
			TokenURL:     cfg.TokenURL,
			AuthStyle:    style,
		},
		secret: cfg.ClientSecret,
		http:   hc,
	}, nil
}

// Fetch requests a token for scopes (none: the client's default scopes).
// Failures are returned as *Error.
func (c *Client) Fetch(ctx context.Context, scopes []string) (Grant, error) {
	cfg := c.cfg // shallow copy: Scopes differ per call
	cfg.Scopes = scopes
	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, c.http))
	if err != nil {
		return Grant{}, c.classify(ctx, err)
	}
	g := Grant{
		AccessToken: tok.AccessToken,
		TokenType:   tok.Type(),
		ExpiresIn:   expiresIn(tok.Extra("expires_in")),
	}
	g.ExpiresInSet = tok.Extra("expires_in") != nil
	if s, ok := tok.Extra("scope").(string); ok {
		g.Scope = s
	}
	return g, nil
}

// expiresIn reads the raw expires_in: a JSON number, or a string as some
// providers send (and as form-encoded responses carry). Anything else
// counts as missing.
func expiresIn(v any) time.Duration {
	var secs float64
	switch v := v.(type) {
	case float64:
		secs = v
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0
		}
		secs = f
	default:
		return 0
	}
	// Beyond ~290 years a Duration overflows; anything that large is
	// absurd anyway and gets capped by the caller.
	if secs > float64(math.MaxInt64/int64(time.Second)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(secs * float64(time.Second))
}

// Error is a failed token request. Its message is safe to log and to show
// to callers: it holds neither the client secret nor the response body.
type Error struct {
	// TokenURL is the endpoint that failed.
	TokenURL string
	// StatusCode is the HTTP status, zero when no response arrived.
	StatusCode int
	// Code and Description are RFC 6749's error and error_description.
	Code        string
	Description string
	// RetryAfter is the server's Retry-After, zero when absent.
	RetryAfter time.Duration
	// Permanent reports that retrying with the same credentials will fail
	// the same way (invalid_client, unauthorized_client, invalid_scope).
	Permanent bool
	// Err is the transport or parse error, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("upstream: token request to ")
	b.WriteString(e.TokenURL)
	b.WriteString(" failed")
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " (%s)", e.Description)
		}
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; retry after %s", e.RetryAfter)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// permanentCodes are RFC 6749 errors that no retry with the same client
// credentials and scopes can fix.
var permanentCodes = map[string]bool{
	"invalid_client":      true,
	"unauthorized_client": true,
	"invalid_scope":       true,
}

// maxDescription bounds how much of an IdP's error_description is kept.
const maxDescription = 200

func (c *Client) classify(ctx context.Context, err error) *Error {
	e := &Error{TokenURL: c.cfg.TokenURL}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		e.Code = sanitize(re.ErrorCode, 64, c.secret)
		e.Description = sanitize(re.ErrorDescription, maxDescription, c.secret)
		e.Permanent = permanentCodes[re.ErrorCode]
		if re.Response != nil {
			e.StatusCode = re.Response.StatusCode
			e.RetryAfter = parseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
			if e.Code == "" {
				e.Description = ""
				e.Err = errors.New(http.StatusText(e.StatusCode))
			}
		}
		return e
	}
	if ctx.Err() != nil {
		e.Err = ctx.Err()
		return e
	}
	// Transport and parse errors. x/oauth2 does not put the response body
	// into them, and url.Error carries only the method and URL.
	e.Err = errors.New(sanitize(err.Error(), 300, c.secret))
	return e
}

// sanitize bounds s, drops control characters and, defensively, any echo
// of the client secret.
func sanitize(s string, max int, secret credentials.Secret) string {
	if v := secret.Reveal(); v != "" {
		s = strings.ReplaceAll(s, v, "[REDACTED]")
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// parseRetryAfter reads an HTTP Retry-After value: delay-seconds or an
// HTTP-date. It returns zero for absent, past or malformed values.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

type userAgentTransport struct {
	base http.RoundTripper
	ua   string
}

func (t userAgentTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", t.ua)
	return t.base.RoundTrip(r)
}
