package clientlib

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// StatusError is the error of a request answered with a status other than
// 2xx, when WithStatusErrors asks for it. It carries a bounded excerpt of
// the body, never a request header.
type StatusError struct {
	Method     string
	URL        string // as upstream.RedactURL shows it
	StatusCode int    // e.g. 404
	Status     string // e.g. "404 Not Found"
	// Body is the start of the body (at most 512 bytes), printable, with
	// the tokens sent and anything after "Bearer" or "Basic" redacted; a
	// body that spells a token otherwise (upstream.Echoes) is withheld.
	Body string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("clientlib: %s %s: %s", e.Method, e.URL, e.Status)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// maxExcerpt bounds StatusError.Body.
const maxExcerpt = 512

// failed reports whether resp is an error for WithStatusErrors.
func failed(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return resp.Header.Get("Location") == ""
	}
	return resp.StatusCode/100 != 2
}

// bearer matches credentials a server might echo back.
var bearer = regexp.MustCompile(`(?i)(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*`)

// How an excerpt shows credentials.
const (
	redacted     = "[REDACTED]"
	bodyWithheld = "[body withheld: it echoes the request's token]"
)

// newStatusError reads an excerpt of resp's body, redacting tokens (the
// access tokens sent), and closes the body.
func newStatusError(req *http.Request, resp *http.Response, tokens ...string) *StatusError {
	defer resp.Body.Close()
	longest := 0
	for _, tok := range tokens {
		longest = max(longest, len(url.QueryEscape(tok)), len(strings.ReplaceAll(tok, "/", `\/`)))
	}
	// Enough to see whole any token that starts within the excerpt.
	limit := maxExcerpt + int64(longest)
	buf, _ := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	return &StatusError{Method: req.Method, URL: upstream.RedactURL(req.URL.String()), StatusCode: resp.StatusCode, Status: resp.Status,
		Body: excerpt(buf, int64(len(buf)) > limit, tokens)}
}

// excerpt is StatusError.Body of body, which never ends with the start of a
// token; more says the body went on beyond body.
func excerpt(body []byte, more bool, tokens []string) string {
	s := strings.ToValidUTF8(string(body), "?")
	var forms []string
	for _, tok := range tokens {
		if tok != "" {
			forms = append(forms, tok, url.QueryEscape(tok), strings.ReplaceAll(tok, "/", `\/`))
		}
	}
	for _, f := range forms {
		s = strings.ReplaceAll(s, f, redacted)
	}
	s = strings.TrimSpace(bearer.ReplaceAllString(s, "$1 "+redacted))
	if upstream.Echoes(s, tokens...) { // another spelling of a token
		return bodyWithheld
	}
	if !more && len(s) <= maxExcerpt {
		return printable(s)
	}
	cut := min(len(s), maxExcerpt)
	for cut > 0 && cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut--
	}
	s = s[:cut]
	for _, f := range append(forms, redacted) { // a token (or its mark) cut short
		for k := min(len(f)-1, len(s)); k > 0; k-- {
			if strings.HasSuffix(s, f[:k]) {
				s = s[:len(s)-k]
				break
			}
		}
	}
	return printable(s) + "…"
}

// printable replaces control characters with spaces.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
