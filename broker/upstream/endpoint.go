package upstream

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// ErrInsecureURL is wrapped by CheckURL's error for a plain http URL that
// would carry the client secret in clear text.
var ErrInsecureURL = errors.New("insecure upstream URL")

// URLRules say what CheckURL accepts. The zero value is a token URL that
// must be https unless its host is loopback.
type URLRules struct {
	Base              bool // a base URL (an auth server): no query either
	AllowInsecureHTTP bool // plain http on any host, not only loopback
}

// CheckURL is the one validator of a token URL or auth server: absolute
// http(s) without user info or fragment, https unless loopback or
// r.AllowInsecureHTTP. Errors show the URL as RedactURL does.
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

// RedactURL is the one way a token URL is shown: scheme, host and path,
// never user info, query or fragment, where some IdPs want keys;
// "[invalid URL]" if it does not parse.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[invalid URL]"
	}
	return shownURL(u).String()
}

// shownURL is RedactURL's rule on a parsed URL. An opaque part holding
// "@" is user info.
func shownURL(u *url.URL) *url.URL {
	s := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	if !strings.Contains(u.Opaque, "@") {
		s.Opaque = u.Opaque
	}
	return s
}

// IsLoopbackHost is the one loopback rule, for the hosts to which secrets
// and tokens may go without TLS: host (as url.URL.Hostname returns it) is a
// loopback IP literal or exactly "localhost". Nothing is resolved, and
// "localhost." or "x.localhost" do not count: a resolver may send them away.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// RootCAs returns the system roots plus the PEM certificates in caFile (a
// tenant's ca_file); nil, the system roots, for an empty caFile.
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
