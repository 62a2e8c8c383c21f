package clientlib

import (
	"net/http"
	"net/url"
	"strings"
)

// maxHops bounds the walk back along a redirect chain (http.Client stops
// after 10).
const maxHops = 64

// entryURL returns the URL of the request that entered the http.Client:
// net/http sets a redirect's Request.Response, whose Request is the
// previous hop. ok is false when the chain is broken or too long.
func entryURL(req *http.Request) (_ *url.URL, ok bool) {
	for range maxHops {
		if req.Response == nil {
			return req.URL, req.URL != nil
		}
		if req = req.Response.Request; req == nil {
			return nil, false
		}
	}
	return nil, false
}

// forEntryOrigin reports whether req may carry a token: it goes to the
// origin of the request that entered the client.
func forEntryOrigin(req *http.Request) bool {
	if req.Response == nil { // not a redirect: the common case
		return true
	}
	entry, ok := entryURL(req)
	return ok && sameOrigin(entry, req.URL)
}

// sameOrigin reports whether a and b have the same scheme, host and port
// (RFC 6454), default ports filled in.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

// port is u's port, or its scheme's default.
func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}
