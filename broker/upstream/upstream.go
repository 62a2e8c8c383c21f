// Package upstream fetches access tokens from an identity provider with the
// OAuth 2.0 client-credentials grant, and classifies its failures.
//
// It wraps golang.org/x/oauth2/clientcredentials: the client authentication
// style is fixed per client (never auto-probed), every request runs on the
// caller's context, redirects are never followed (a 3xx is an error naming
// the status and the Location host), and errors never carry a client
// secret or the response body: only the HTTP status, a registered OAuth2
// error code and an error_description that is short plain text echoing no
// secret.
package upstream

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// Config describes one OAuth 2.0 client at one token endpoint.
type Config struct {
	// TokenURL is the identity provider's token endpoint.
	TokenURL string
	// ClientID and ClientSecret authenticate the client.
	ClientID     string
	ClientSecret creds.Secret
	// Fallbacks are further credentials held during a rotation, tried in
	// order after ClientID/ClientSecret when the identity provider answers
	// invalid_client (and only then; for a private_key_jwt credential also
	// invalid_request, Ory Hydra's answer to a kid it does not know). The
	// Client remembers the one that worked and starts with it next time.
	Fallbacks []Credential
	// ClientKey, instead of ClientSecret, authenticates the client with
	// private_key_jwt (RFC 7523): each request carries a new assertion
	// signed with it, whose JWS kid is KeyID ("" for the key's RFC 7638
	// thumbprint, see KeyID).
	ClientKey creds.PrivateKey
	KeyID     string
	// AssertionAudience is the aud of the client assertions; "" means the
	// token URL without its query (RedactURL).
	AssertionAudience string
	// AuthStyle is oauth2.AuthStyleInParams (client_secret_post, the
	// default when zero) or oauth2.AuthStyleInHeader (client_secret_basic).
	// Credentials with a key send their assertion in the body whatever it
	// says.
	AuthStyle oauth2.AuthStyle
	// HTTPClient sends the requests; nil means a client with sane timeouts.
	// It is copied: the Client never follows a redirect, whatever
	// HTTPClient.CheckRedirect says, because a redirected POST would carry
	// the client secret to another host.
	HTTPClient *http.Client
	// UserAgent, when set, is sent on every request.
	UserAgent string
	// Logger receives which credential worked after a fallback; nil
	// discards it. Secrets are never logged.
	Logger *slog.Logger
}

// Credential is one client ID and either a secret or, for
// private_key_jwt, a private key (and the JWS kid of its assertions; ""
// for the key's thumbprint). Name says where it came from (e.g. a file
// name) for logs; it is never the secret.
type Credential struct {
	Name         string
	ClientID     string
	ClientSecret creds.Secret
	Key          creds.PrivateKey
	KeyID        string
}

// String describes c without its secret or key.
func (c Credential) String() string {
	if !c.Key.IsZero() {
		return fmt.Sprintf("upstream.Credential{Name:%q ClientID:%q Key:%s KeyID:%q}", c.Name, c.ClientID, c.Key, c.KeyID)
	}
	return fmt.Sprintf("upstream.Credential{Name:%q ClientID:%q ClientSecret:%s}", c.Name, c.ClientID, c.ClientSecret)
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
	// signers[i] signs the assertions of creds[i] if it has a key; nil
	// for a secret.
	signers  []*assertionSigner
	audience string
	// secrets are creds' secrets and the keys of tokenURL (query values,
	// userinfo), which no IdP answer may echo; a request's assertion is
	// added per request.
	secrets []Credential
	current atomic.Int32 // index into creds of the one to try first
	http    *http.Client
	log     *slog.Logger
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

// prepareCredentials checks that each credential has a client ID and
// either a secret or a key, and returns the signers of the keys (nil for
// a secret) and the credentials that hold a secret.
func prepareCredentials(creds []Credential) (signers []*assertionSigner, secrets []Credential, err error) {
	signers = make([]*assertionSigner, len(creds))
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
			if signers[i], err = newAssertionSigner(c.Key, c.KeyID); err != nil {
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

// urlSecrets are the values in a token URL's query and userinfo: some
// IdPs take a key there, and RedactURL never shows them.
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

// prepare returns the copy of base (nil: a client with a 30 s timeout)
// that a Client uses: a copy, so the caller's client keeps its own policy.
func prepare(base *http.Client, userAgent string) *http.Client {
	hc := http.Client{Timeout: 30 * time.Second}
	if base != nil {
		hc = *base
	}
	// Never follow: the 3xx itself comes back and is classified.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	// Mapped here too for callers whose client does not map beneath its
	// own layers; a daemon that traces maps innermost (MapTransportErrors).
	hc.Transport = observingTransport{base: MapTransportErrors(rt), ua: userAgent}
	return &hc
}

// Fetch requests a token for scopes (none: the client's default scopes).
// Failures are returned as *Error. With fallback credentials, a rejection
// of the credential (rejected) makes it try the others in order, at most
// one request per credential.
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

// rejected reports whether err rejects credential i itself, so that a
// rotation's next credential may work: invalid_client, or for a
// private_key_jwt credential invalid_request, which Ory Hydra answers to
// an assertion signed with a key (kid) it does not know. An outage, a
// rate limit or a scope error never moves to an older credential.
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
		// private_key_jwt: client_id and a new assertion in the body.
		assertion, sig, err := s.sign(cred.ClientID, c.audience, time.Now())
		if err != nil {
			return Grant{}, &Error{TokenURL: RedactURL(c.tokenURL), Err: err}
		}
		cfg.AuthStyle = oauth2.AuthStyleInParams
		cfg.EndpointParams = url.Values{"client_assertion_type": {ClientAssertionType}, "client_assertion": {assertion}}
		// An answer echoing the assertion is treated as one echoing a
		// secret; its signature is the part no other JWT shares.
		secrets = append(slices.Clip(secrets), Credential{ClientSecret: creds.Secret(sig)})
	}
	var seen response
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.http)
	ctx = context.WithValue(ctx, responseKey{}, &seen)
	tok, err := cfg.Token(ctx)
	if err != nil {
		return Grant{}, c.classify(ctx, err, &seen, secrets)
	}
	// The access token and its type reach callers and terminals: only
	// RFC 6750 and RFC 6749 syntax does, and never a credential echoed.
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

// invalid is the error of a 2xx token response with an unusable field:
// a summary naming the field, never its value or the body.
func (c *Client) invalid(seen *response, why string) *Error {
	status, ct, n := seen.summary()
	return &Error{TokenURL: RedactURL(c.tokenURL), StatusCode: status, Err: &summaryError{
		what: "a token response " + why, status: status, contentType: c.contentType(ct), length: n,
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

// tokenTypeSyntax is a token type name as RFC 6749 §7.1 and §11.1 use
// them ("Bearer", "DPoP", "N_A", "urn"-free short names), bounded.
var tokenTypeSyntax = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,31}$`)

// tokenType returns the response's token_type ("Bearer" when absent, the
// RFC 6750 default), with the case of the well-known types normalised;
// ok is false for anything that is not a token type name.
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

// responseKey is the context key of the *response a fetch records.
type responseKey struct{}

// response is what the observing transport saw of the token endpoint's
// answer: enough to summarise a body that is not shown.
type response struct {
	mu          sync.Mutex
	status      int
	contentType string
	body        *countingBody
}

func (r *response) summary() (status int, contentType string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.body != nil {
		n = r.body.n.Load()
	}
	return r.status, r.contentType, n
}

// observingTransport sets the User-Agent and records the response's
// status, content type and length for error summaries.
type observingTransport struct {
	base http.RoundTripper
	ua   string
}

func (t observingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.ua != "" {
		r = r.Clone(r.Context())
		r.Header.Set("User-Agent", t.ua)
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil || resp == nil {
		return resp, err
	}
	if seen, ok := r.Context().Value(responseKey{}).(*response); ok {
		body := &countingBody{ReadCloser: resp.Body}
		resp.Body = body
		seen.mu.Lock()
		seen.status, seen.contentType, seen.body = resp.StatusCode, resp.Header.Get("Content-Type"), body
		seen.mu.Unlock()
	}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
