package upstream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// scrubber removes every form in which a client's secrets may come back in
// an IdP's error text: the raw secret; URL query-escaped (as in the form
// body) and path-escaped; JSON-escaped (with and without HTML escaping)
// and HTML-escaped; base64 (standard and URL alphabets, with and without
// padding) of the secret alone, of "id:secret" and of the escaped
// "id:secret" that client_secret_basic sends (RFC 6749 §2.3.1). Matching
// is case-insensitive, so lower-case percent escapes are caught too.
// Whatever is left of a client_secret= form field or a Basic credential is
// removed as well, whoever's it is.
type scrubber struct {
	secrets *regexp.Regexp
}

// redacted replaces each removed form.
const redacted = "[REDACTED]"

var genericSecrets = regexp.MustCompile(`(?i)(client_secret(=|"?\s*:\s*"?))[^&\s"'<>,;}]*|(basic\s+)[a-z0-9+/=_-]{4,}`)

func newScrubber(creds []Credential) *scrubber {
	var forms []string
	add := func(s string) {
		if s != "" && !slices.Contains(forms, s) {
			forms = append(forms, s)
		}
	}
	for _, c := range creds {
		s := c.ClientSecret.Reveal()
		add(s)
		add(url.QueryEscape(s))
		add(url.PathEscape(s))
		add(html.EscapeString(s))
		add(jsonEscape(s, true))
		add(jsonEscape(s, false))
		for _, pair := range []string{s, c.ClientID + ":" + s, url.QueryEscape(c.ClientID) + ":" + url.QueryEscape(s)} {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
				add(enc.EncodeToString([]byte(pair)))
			}
		}
	}
	// Longest first, so that a form is not left half-replaced by a
	// shorter one it contains.
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	quoted := make([]string, len(forms))
	for i, f := range forms {
		quoted[i] = regexp.QuoteMeta(f)
	}
	return &scrubber{secrets: regexp.MustCompile("(?i)" + strings.Join(quoted, "|"))}
}

func jsonEscape(s string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(s)
	out := strings.TrimSpace(b.String())
	return strings.TrimSuffix(strings.TrimPrefix(out, `"`), `"`)
}

// text removes the secrets from s, replaces control and non-ASCII
// characters, and caps it at max characters.
func (sc *scrubber) text(s string, max int) string {
	s = sc.secrets.ReplaceAllLiteralString(s, redacted)
	s = genericSecrets.ReplaceAllString(s, "${1}${3}"+redacted)
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max { // ASCII only by now: bytes are characters
		s = s[:max] + "..."
	}
	return s
}

// description is text for an error_description.
func (sc *scrubber) description(s string) string { return sc.text(s, MaxDescription) }
