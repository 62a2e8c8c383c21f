// Package upstream fetches access tokens from an identity provider with the
// OAuth 2.0 client-credentials grant (golang.org/x/oauth2/clientcredentials),
// and classifies its failures. The authentication style is fixed per client,
// redirects are never followed, and errors never carry a secret or the
// response body (see Error).
package upstream

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// Config describes one OAuth 2.0 client at one token endpoint.
type Config struct {
	TokenURL     string
	ClientID     string
	ClientSecret creds.Secret
	// Fallbacks are a rotation's further credentials, tried in order when
	// one is rejected (see Fetch); the one that worked goes first next time.
	Fallbacks []Credential
	// ClientKey replaces ClientSecret with private_key_jwt (RFC 7523);
	// KeyID is its JWS kid ("": see KeyID).
	ClientKey         creds.PrivateKey
	KeyID             string
	AssertionAudience string           // "": RedactURL(TokenURL)
	AuthStyle         oauth2.AuthStyle // InParams (the default) or InHeader
	// HTTPClient sends the requests (nil: a 30 s timeout); it is copied and
	// never follows a redirect, which would carry the secret elsewhere.
	HTTPClient *http.Client
	UserAgent  string
	Logger     *slog.Logger // which credential worked after a fallback; nil discards
}

// Credential is one client ID and either a secret or a private_key_jwt key
// (with its kid). Name says where it came from, for logs.
type Credential struct {
	Name         string
	ClientID     string
	ClientSecret creds.Secret
	Key          creds.PrivateKey
	KeyID        string
}

// String describes c without its secret or key.
func (c Credential) String() string {
	return fmt.Sprintf("upstream.Credential{Name:%q ClientID:%q ClientSecret:%s Key:%s KeyID:%q}",
		c.Name, c.ClientID, c.ClientSecret, c.Key, c.KeyID)
}

// LogValue redacts the secret and the key.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("client_id", c.ClientID))
}

// Equal reports whether c and o are the same credential.
func (c Credential) Equal(o Credential) bool {
	return c.Name == o.Name && c.ClientID == o.ClientID && c.ClientSecret.Equal(o.ClientSecret) &&
		c.Key.Equal(o.Key) && c.KeyID == o.KeyID
}

// Client fetches tokens for one configured client. It is safe for
// concurrent use.
type Client struct {
	tokenURL string
	style    oauth2.AuthStyle
	creds    []Credential
	signers  []jose.Signer // signers[i] signs for creds[i]; nil for a secret
	audience string
	secrets  []Credential // no answer may echo them: creds' and the token URL's
	current  atomic.Int32 // index into creds of the one to try first
	http     *http.Client
	log      *slog.Logger
}

// Grant is a token endpoint's successful answer.
type Grant struct {
	AccessToken  string
	TokenType    string
	ExpiresIn    time.Duration // zero or negative when unusable
	ExpiresInSet bool          // a stated zero, not a missing expires_in
	Scope        string        // the granted scope as reported, if any
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
		return nil, fmt.Errorf("upstream: token URL %q: must be an absolute http(s) URL", RedactURL(cfg.TokenURL))
	}
	creds := append([]Credential{{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, Key: cfg.ClientKey, KeyID: cfg.KeyID}}, cfg.Fallbacks...)
	signers, secrets, err := prepareCredentials(creds)
	if err != nil {
		return nil, err
	}
	style := cfg.AuthStyle
	switch style {
	case oauth2.AuthStyleAutoDetect:
		style = oauth2.AuthStyleInParams
	case oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader:
	default:
		return nil, fmt.Errorf("upstream: unknown auth style %d", style)
	}
	var hc *http.Client
	if pt, ok := transportOf(cfg.HTTPClient).(*poolTransport); ok {
		hc = pt.prepared(cfg.HTTPClient, cfg.UserAgent) // shared by the pool's clients
	} else {
		hc = prepare(cfg.HTTPClient, cfg.UserAgent)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		tokenURL: cfg.TokenURL,
		style:    style,
		creds:    creds,
		signers:  signers,
		audience: cmp.Or(cfg.AssertionAudience, RedactURL(cfg.TokenURL)),
		secrets:  append(secrets, urlSecrets(u)...),
		http:     hc,
		log:      log,
	}, nil
}

// prepareCredentials checks that each credential has a client ID and one
// of a secret and a key, and returns the keys' signers and the secrets.
func prepareCredentials(creds []Credential) (signers []jose.Signer, secrets []Credential, err error) {
	signers = make([]jose.Signer, len(creds))
	for i, c := range creds {
		which := ""
		if i > 0 {
			which = fmt.Sprintf(" of fallback %d (%s)", i, c.Name)
		}
		switch {
		case c.ClientID == "":
			return nil, nil, fmt.Errorf("upstream: client ID%s is empty", which)
		case !c.Key.IsZero() && c.ClientSecret.Reveal() != "":
			return nil, nil, fmt.Errorf("upstream: credential%s has both a client secret and a private key; private_key_jwt sends no secret", which)
		case !c.Key.IsZero():
			if signers[i], err = newSigner(c.Key, c.KeyID); err != nil {
				return nil, nil, err
			}
		case c.ClientSecret.Reveal() == "":
			return nil, nil, fmt.Errorf("upstream: client secret%s is empty", which)
		default:
			secrets = append(secrets, c)
		}
	}
	return signers, secrets, nil
}

// urlSecrets are the values in a token URL's query and userinfo, where
// some IdPs take a key.
func urlSecrets(u *url.URL) []Credential {
	var out []Credential
	for _, vs := range u.Query() {
		for _, v := range vs {
			if v != "" {
				out = append(out, Credential{ClientSecret: creds.Secret(v)})
			}
		}
	}
	if p, ok := u.User.Password(); ok && p != "" {
		out = append(out, Credential{ClientSecret: creds.Secret(p)})
	}
	if n := u.User.Username(); n != "" {
		out = append(out, Credential{ClientSecret: creds.Secret(n)})
	}
	return out
}

func transportOf(hc *http.Client) http.RoundTripper {
	if hc == nil {
		return nil
	}
	return hc.Transport
}

// prepare returns the copy of base (nil: a 30 s timeout) that a Client
// uses: redirects refused, transport errors mapped, User-Agent set.
func prepare(base *http.Client, userAgent string) *http.Client {
	hc := http.Client{Timeout: 30 * time.Second}
	if base != nil {
		hc = *base
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	hc.Transport = observingTransport{base: MapTransportErrors(rt), ua: userAgent}
	return &hc
}

// Fetch requests a token for scopes (none: the client's default scopes).
// Failures are *Error. A rejected credential (see rejected) makes it try
// the fallbacks in order, one request each.
func (c *Client) Fetch(ctx context.Context, scopes []string) (Grant, error) {
	first := int(c.current.Load())
	var lastErr *Error
	for n := range len(c.creds) {
		i := (first + n) % len(c.creds)
		g, err := c.fetch(ctx, i, scopes)
		if err == nil {
			if i != first {
				c.current.Store(int32(i))
				c.log.Warn("token request succeeded with another credential; rotation fallback in use",
					"credential", i+1, "of", len(c.creds), "source", c.credName(i),
					"rejected", c.credName(first))
			}
			return g, nil
		}
		lastErr = err
		if !c.rejected(i, err) || len(c.creds) == 1 {
			break
		}
		c.log.Warn("identity provider rejected a credential ("+err.Code+"); trying the next",
			"credential", i+1, "of", len(c.creds), "source", c.credName(i))
	}
	if len(c.creds) > 1 && lastErr.Code == "invalid_client" {
		lastErr.Tried = len(c.creds)
	}
	return Grant{}, lastErr
}

// rejected reports whether err rejects credential i itself: invalid_client,
// or for a private_key_jwt credential invalid_request (Ory Hydra's answer
// to a kid it does not know). Nothing else moves to another credential.
func (c *Client) rejected(i int, err *Error) bool {
	return err.Code == "invalid_client" || err.Code == "invalid_request" && c.signers[i] != nil
}

// credName names credential i for logs: its Name, else its position.
func (c *Client) credName(i int) string {
	if n := c.creds[i].Name; n != "" {
		return n
	}
	if i == 0 {
		return "primary credential"
	}
	return fmt.Sprintf("credential %d", i+1)
}

// fetch requests a token with credential i.
func (c *Client) fetch(ctx context.Context, i int, scopes []string) (Grant, *Error) {
	cred := c.creds[i]
	cfg := clientcredentials.Config{
		ClientID:     cred.ClientID,
		ClientSecret: cred.ClientSecret.Reveal(),
		TokenURL:     c.tokenURL,
		AuthStyle:    c.style,
		Scopes:       scopes,
	}
	secrets := c.secrets
	if s := c.signers[i]; s != nil {
		assertion, sig, err := sign(s, cred.ClientID, c.audience, time.Now())
		if err != nil {
			return Grant{}, &Error{TokenURL: RedactURL(c.tokenURL), Err: err}
		}
		cfg.AuthStyle = oauth2.AuthStyleInParams
		cfg.EndpointParams = url.Values{"client_assertion_type": {ClientAssertionType}, "client_assertion": {assertion}}
		// The answer must not echo the assertion's signature either.
		secrets = append(slices.Clip(secrets), Credential{ClientSecret: creds.Secret(sig)})
	}
	var seen response
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.http)
	ctx = context.WithValue(ctx, responseKey{}, &seen)
	tok, err := cfg.Token(ctx)
	if err != nil {
		return Grant{}, c.classify(ctx, err, &seen, secrets)
	}
	// The token and its type reach callers and terminals: RFC syntax only,
	// and never an echoed credential.
	switch {
	case !isB64Token(tok.AccessToken):
		return Grant{}, c.invalid(&seen, "whose access_token is not an RFC 6750 token (b64token: letters, digits, -._~+/ and trailing =)")
	case tokenEchoes(secrets, tok.AccessToken):
		return Grant{}, c.invalid(&seen, "whose access_token echoes the client credentials")
	}
	tt, ok := tokenType(tok.TokenType)
	if !ok || echoes(secrets, tt) { // not a name, or one made of the secret
		return Grant{}, c.invalid(&seen, "with an invalid token_type")
	}
	g := Grant{
		AccessToken: tok.AccessToken,
		TokenType:   tt,
		ExpiresIn:   expiresIn(tok.Extra("expires_in")),
	}
	g.ExpiresInSet = tok.Extra("expires_in") != nil
	if s, ok := tok.Extra("scope").(string); ok {
		g.Scope = s
	}
	return g, nil
}

// invalid is the error of a 2xx token response with an unusable field,
// naming the field, never its value.
func (c *Client) invalid(seen *response, why string) *Error {
	status, ct, n := seen.summary()
	return &Error{TokenURL: RedactURL(c.tokenURL), StatusCode: status, Err: &summaryError{
		what: "a token response " + why, status: status, contentType: contentType(ct), length: n,
	}}
}

// isB64Token reports whether s is an RFC 6750 §2.1 b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	for i := range len(body) {
		c := body[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return body != ""
}

// tokenTypeSyntax is a short token type name (RFC 6749 §7.1, §11.1).
var tokenTypeSyntax = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,31}$`)

// tokenType returns token_type ("Bearer" when absent) with the case of the
// well-known types normalised; ok is false for anything else than a name.
func tokenType(raw string) (string, bool) {
	switch {
	case raw == "", strings.EqualFold(raw, "bearer"):
		return "Bearer", true
	case strings.EqualFold(raw, "dpop"):
		return "DPoP", true
	case strings.EqualFold(raw, "mac"):
		return "MAC", true
	}
	return raw, tokenTypeSyntax.MatchString(raw)
}

// expiresIn reads expires_in: a JSON number, or a string as some providers
// and form-encoded responses send. Anything else counts as missing.
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
	// A Duration overflows beyond ~290 years; the caller caps it anyway.
	if secs > float64(math.MaxInt64/int64(time.Second)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(secs * float64(time.Second))
}

// ParseRetryAfter reads an HTTP Retry-After value, delay-seconds or an
// HTTP-date, as a wait from now of at most a day (zero for a past one); ok
// is false for an absent or malformed value.
func ParseRetryAfter(v string, now time.Time) (_ time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Duration(min(max(n, 0), int64(24*time.Hour/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), 24*time.Hour), true
	}
	return 0, false
}
