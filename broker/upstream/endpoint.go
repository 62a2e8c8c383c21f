package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// The rules for an identity provider's endpoint: which URLs may receive a
// client secret, what counts as loopback, and which CAs are trusted.

// ErrInsecureURL is wrapped by CheckURL's error for a plain http URL that
// would carry the client secret in clear text.
var ErrInsecureURL = errors.New("insecure upstream URL")

// URLRules say what CheckURL accepts. The zero value is a token URL that
// must be https unless its host is loopback.
type URLRules struct {
	// Base marks a base URL (an auth server) to which a path is appended;
	// it may have neither a query nor a fragment.
	Base bool
	// AllowInsecureHTTP accepts plain http on any host, not only loopback.
	AllowInsecureHTTP bool
}

// CheckURL is the one validator of a token URL or auth server: an absolute
// http(s) URL without user info (credentials belong in credentials files),
// without a fragment, and https unless its host is loopback (see
// IsLoopbackHost) or r.AllowInsecureHTTP is set. Only the insecure-http
// error wraps ErrInsecureURL; the others describe a malformed URL. Errors
// show the URL only as RedactURL does. Callers add their own hint on what
// to write instead.
func CheckURL(raw string, r URLRules) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("is not a valid URL")
	case u.User != nil:
		return errors.New("must not contain a user or password (put credentials in credentials_file or client_secret_file)")
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Hostname() == "" || u.Opaque != "":
		return fmt.Errorf("%q is not an absolute http(s) URL", RedactURL(raw))
	case u.Fragment != "" || r.Base && u.RawQuery != "":
		return fmt.Errorf("%q must not have a query or fragment", RedactURL(raw))
	case u.Scheme == "http" && !r.AllowInsecureHTTP && !IsLoopbackHost(u.Hostname()):
		return fmt.Errorf("%w %s: http sends the client secret in clear text; use https, or set allow_insecure_http: true on the tenant if the network is trusted", ErrInsecureURL, RedactURL(raw))
	}
	return nil
}

// RedactURL is the one way a token URL is shown (logs, errors, spans, the
// status page, ListTenants): scheme, host (with port) and path only, never
// user info, query or fragment, where some IdPs want keys. The opaque
// part of a URL missing its "//" counts as its path unless it holds an
// "@" (user info, then). A URL that does not parse shows as "[invalid URL]".
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[invalid URL]"
	}
	return shownURL(u).String()
}

// shownURL is RedactURL's rule on a parsed URL: a copy of u's scheme,
// host and path.
func shownURL(u *url.URL) *url.URL {
	s := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	if !strings.Contains(u.Opaque, "@") {
		s.Opaque = u.Opaque
	}
	return s
}

// IsLoopbackHost is the one loopback rule, for the hosts to which secrets
// and tokens may go without TLS: host, without port or brackets (as
// url.URL.Hostname returns it), is a loopback IP literal or exactly the
// lower-case string "localhost", byte for byte. No other name counts,
// neither "LOCALHOST" nor "localhost." (a fully qualified name that a
// resolver sends off the host) nor "x.localhost", and nothing is resolved,
// so that the answer never depends on a resolver.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// RootCAs returns the system roots plus the PEM certificates in caFile,
// for a tenant's ca_file (a private CA). With an empty caFile it returns
// nil, which means the system roots. Verification is never disabled.
func RootCAs(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := creds.ReadFile(caFile, creds.MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("upstream: ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("upstream: ca_file %s: no PEM certificates found", caFile)
	}
	return pool, nil
}

// ClientWithRootCAs returns base (nil: Config.HTTPClient's default) if
// roots is nil, else a copy of base whose transport trusts roots for the
// token endpoint's certificate. It needs base's Transport to be nil or an
// *http.Transport. Certificate verification is never disabled.
func ClientWithRootCAs(base *http.Client, roots *x509.CertPool) (*http.Client, error) {
	if roots == nil {
		return base, nil
	}
	c := http.Client{Timeout: 30 * time.Second}
	if base != nil {
		c = *base
	}
	var tr *http.Transport
	switch t := c.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("upstream: root CAs need the HTTP client's Transport to be an *http.Transport, not %T", t)
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tr.TLSClientConfig.RootCAs = roots
	tr.TLSClientConfig.InsecureSkipVerify = false
	c.Transport = tr
	return &c, nil
}
