package upstream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"html"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// scrubber decides what of an IdP's free text may be shown. Enumerating
// the encodings in which a secret can come back cannot win (an IdP may
// double-escape it, PHP-escape it, HTML-entity it, base64 it, or quote
// only part of it), so the rule is the other way round: the text is
// normalised through many decodings (see variants) and if any variant
// contains a secret, "id:secret", or a run of echoRun consecutive
// characters of a secret, letter case aside, the whole text is withheld.
// Only text that echoes nothing is shown, after the plain forms are
// redacted once more (belt and braces: the raw secret; URL query- and
// path-escaped; JSON- and HTML-escaped; base64 of the secret, "id:secret"
// and the escaped "id:secret" of client_secret_basic) and whatever is left
// of a client_secret= field or a Basic credential is removed.
type scrubber struct {
	echoIndex
	secrets *regexp.Regexp
	// normRuns are the normRun-rune windows of every secret normalised
	// (see normalise), or the whole of a shorter one.
	normRuns map[string]bool
}

// redacted replaces each removed form.
const redacted = "[REDACTED]"

// withheld replaces a description that echoed a credential.
const withheld = "[description withheld: it echoed the client credentials]"

// withheldOpaque replaces a description that does not look like plain
// language (see plainText), so may encode a credential unrecognised.
const withheldOpaque = "[description withheld: not plain text, it may encode the client credentials]"

// echoRun is the length of a run of a secret's characters that counts as
// an echo. Secrets are random, so 12 consecutive characters of one in an
// IdP's text are a partial or truncated echo, not chance.
const echoRun = 12

// maxScanned bounds the text that is analysed; longer text is withheld
// whole (a real error_description is a sentence).
const maxScanned = 8 << 10

var genericSecrets = regexp.MustCompile(`(?i)(client_secret(=|"?\s*:\s*"?))[^&\s"'<>,;}]*|(basic\s+)[a-z0-9+/=_-]{4,}`)

// echoIndex finds the credentials themselves in lower-cased text: a
// secret or "id:secret" whole, or echoRun consecutive bytes of a secret.
type echoIndex struct {
	// needles are the lower-cased secrets and "id:secret" pairs.
	needles []string
	// runs are the lower-cased echoRun-byte windows of every secret.
	runs map[string]bool
	// pieces are the secrets' aligned echoRun/2-byte pieces: every run
	// holds one, so text is searched for them and only checked for a
	// run where one occurs.
	pieces []string
}

func newEchoIndex(creds []Credential) echoIndex {
	x := echoIndex{runs: map[string]bool{}}
	for _, c := range creds {
		low := strings.ToLower(c.ClientSecret.Reveal())
		x.needles = append(x.needles, low, strings.ToLower(c.ClientID)+":"+low)
		for i := 0; i+echoRun <= len(low); i++ {
			x.runs[low[i:i+echoRun]] = true
		}
		for i := 0; len(low) >= echoRun && i+echoRun/2 <= len(low); i += echoRun / 2 {
			x.pieces = append(x.pieces, low[i:i+echoRun/2])
		}
	}
	return x
}

func newScrubber(creds []Credential) *scrubber {
	sc := &scrubber{echoIndex: newEchoIndex(creds), normRuns: map[string]bool{}}
	var forms []string
	add := func(s string) {
		if s != "" && !slices.Contains(forms, s) {
			forms = append(forms, s)
		}
	}
	for _, c := range creds {
		s := c.ClientSecret.Reveal()
		if n := []rune(normalise(s)); len(n) < normRun {
			if len(n) >= minNormRun {
				sc.normRuns[string(n)] = true
			}
		} else {
			for i := 0; i+normRun <= len(n); i++ {
				sc.normRuns[string(n[i:i+normRun])] = true
			}
		}
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
	sc.secrets = regexp.MustCompile("(?i)" + strings.Join(quoted, "|"))
	return sc
}

func jsonEscape(s string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(s)
	out := strings.TrimSpace(b.String())
	return strings.TrimSuffix(strings.TrimPrefix(out, `"`), `"`)
}

// echoes reports whether s, in any of its decoded variants, contains a
// credential or a run of echoRun characters of a secret. Text longer than
// maxScanned counts as an echo: it is not analysed, so it is not shown.
func (sc *scrubber) echoes(s string) bool {
	if len(s) > maxScanned {
		return true
	}
	for _, v := range variants(s) {
		if sc.contains(strings.ToLower(v)) || sc.containsNormalised(v) {
			return true
		}
	}
	return false
}

// normRun is the length of a window of a normalised secret that counts
// as an echo in normalised text, and minNormRun the shortest normalised
// secret still looked for whole.
const normRun, minNormRun = 8, 6

// normalise lower-cases s and keeps only its letters and digits, undoing
// separators an IdP may put between the pieces of a secret (spaces,
// " | ", markup, zero-width characters, dots between host labels).
func normalise(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// containsNormalised reports whether s normalised, reversed or rot13'd
// holds a normRun window of a normalised secret.
func (sc *scrubber) containsNormalised(s string) bool {
	if m := markup.ReplaceAllString(s, ""); m != s && sc.containsNormalised(m) {
		return true // the letters of tags between the pieces removed
	}
	n := []rune(normalise(s))
	rev := slices.Clone(n)
	slices.Reverse(rev)
	rot := make([]rune, len(n))
	for i, r := range n {
		if 'a' <= r && r <= 'z' {
			r = 'a' + (r-'a'+13)%26
		}
		rot[i] = r
	}
	for _, t := range [][]rune{n, rev, rot} {
		for w := range sc.normRuns {
			if strings.Contains(string(t), w) {
				return true
			}
		}
	}
	return false
}

// Limits of plainText.
const (
	maxWord    = 24 // runes in a word
	maxSingles = 30 // percent of words of one letter or digit, or none
	minWordy   = 50 // percent of words of letters only
)

// opaqueRun is a run of 16 of the characters of hex, base32/64 and
// escapes.
var opaqueRun = regexp.MustCompile(`[A-Za-z0-9+/=_%:.-]{16,}`)

// markup is an HTML or XML tag.
var markup = regexp.MustCompile(`<[^<>]*>`)

// plainText reports whether s looks like natural language, the only
// kind of IdP text shown: no word (with or without markup) longer than
// maxWord runes or holding an opaqueRun; at most maxSingles percent of
// words of a single letter or digit (a secret spelt out); at least
// minWordy percent of words of letters only (not byte lists, spaced hex
// or escapes); and no format characters such as U+200B. Decodings cannot
// be enumerated; this bounds what an unrecognised one can carry.
func plainText(s string) bool {
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.Is(unicode.Cf, r) }) {
		return false
	}
	for _, w := range append(strings.Fields(s), strings.Fields(markup.ReplaceAllString(s, ""))...) {
		if utf8.RuneCountInString(w) > maxWord || opaqueRun.MatchString(w) {
			return false
		}
	}
	words := strings.Fields(markup.ReplaceAllString(s, " "))
	if len(words) == 0 {
		return true
	}
	singles, wordy := 0, 0
	for _, w := range words {
		core := strings.TrimFunc(w, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
		if utf8.RuneCountInString(core) <= 1 {
			singles++
		}
		if core != "" && !strings.ContainsFunc(core, unicode.IsDigit) {
			wordy++
		}
	}
	return singles*100 <= maxSingles*len(words) && wordy*100 >= minWordy*len(words)
}

func (x echoIndex) contains(low string) bool {
	for _, n := range x.needles {
		if strings.Contains(low, n) {
			return true
		}
	}
	for _, p := range x.pieces {
		for at := 0; ; at++ {
			i := strings.Index(low[at:], p)
			if i < 0 {
				break
			}
			at += i
			// The runs that hold this piece start at most echoRun/2-1
			// bytes before it.
			for r := max(0, at+len(p)-echoRun); r <= at && r+echoRun <= len(low); r++ {
				if x.runs[low[r:r+echoRun]] {
					return true
				}
			}
		}
	}
	return false
}

// token reports whether an access token (of b64token syntax, which has
// no escapes) carries a credential: as it is, with '+' read as a space,
// or in a base64 decoding of one of its runs (see decodeBase64Run), as
// decoded or, if it is text, with one unescape undone (a JWT claim
// holding the secret JSON-escaped). Unlike echoes it is linear in
// len(tok), for tokens of any size, and has no normalised matching,
// which would refuse genuine tokens by chance.
func (x echoIndex) token(tok string) bool {
	found := func(v string) bool { return x.contains(lower(v)) }
	if found(tok) || strings.Contains(tok, "+") && found(strings.ReplaceAll(tok, "+", " ")) {
		return true
	}
	for _, run := range base64Run.FindAllString(tok, -1) {
		for _, d := range decodeBase64Run(run) {
			if found(d) {
				return true
			}
			if !utf8.ValidString(d) {
				continue // binary, or the wrong alignment: no escaped text
			}
			for _, undo := range unescapes {
				if u := undo(d); u != d && found(u) {
					return true
				}
			}
		}
	}
	return false
}

// lower is strings.ToLower for text, and lowers only ASCII letters of
// anything else (binary decodings), which strings.ToLower does slowly.
func lower(s string) string {
	if utf8.ValidString(s) {
		return strings.ToLower(s)
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// maxVariants bounds the work per text: each is at most maxScanned bytes.
const maxVariants = 512

// variants returns s and the texts it decodes to: the closure of s under
// the unescapes (percent-decoding with and without '+' as space, HTML
// entities including numeric ones, JSON/PHP backslash escapes) up to
// unescapeDepth steps; then every base64-looking run of each of those,
// decoded in both alphabets at each of its four alignments, with the
// closure of the decoded text again.
func variants(s string) []string {
	seen := map[string]bool{}
	var out []string
	closure(s, seen, &out)
	for _, v := range slices.Clone(out) {
		for _, run := range base64Run.FindAllString(v, -1) {
			for _, d := range decodeBase64Run(run) {
				if len(out) >= maxVariants {
					return out
				}
				closure(d, seen, &out)
			}
		}
	}
	return out
}

// unescapeDepth is how many unescapes in a row are undone: enough for a
// secret URL-escaped three times, or escaped, JSON-quoted and
// HTML-entitied.
const unescapeDepth = 4

var unescapes = []func(string) string{
	func(s string) string { return percentDecode(s, false) },
	func(s string) string { return percentDecode(s, true) },
	html.UnescapeString,
	jsonUnescape,
}

func closure(s string, seen map[string]bool, out *[]string) {
	level := []string{s}
	if seen[s] {
		return
	}
	seen[s] = true
	*out = append(*out, s)
	for range unescapeDepth {
		var next []string
		for _, v := range level {
			for _, f := range unescapes {
				d := f(v)
				if seen[d] || len(*out) >= maxVariants {
					continue
				}
				seen[d] = true
				*out = append(*out, d)
				next = append(next, d)
			}
		}
		level = next
	}
}

// percentDecode undoes %XX escapes (and '+' as space if plus), leaving
// malformed escapes as they are, unlike url.QueryUnescape which gives up.
func percentDecode(s string, plus bool) string {
	if !strings.Contains(s, "%") && (!plus || !strings.Contains(s, "+")) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case c == '+' && plus:
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// jsonUnescape undoes JSON string escapes wherever they appear, PHP's
// "\/" and "\uXXXX" (surrogate pairs included) among them; anything
// malformed is left as it is.
func jsonUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch c := s[i+1]; c {
		case '"', '\\', '/', '\'':
			b.WriteByte(c)
			i++
		case 'b', 'f', 'n', 'r', 't':
			b.WriteByte(map[byte]byte{'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}[c])
			i++
		case 'u', 'U': // \U too: the text may have been upper-cased
			r, n := hex4(s[i+2:])
			if n == 0 {
				b.WriteByte(s[i])
				continue
			}
			i += 1 + n
			if 0xD800 <= r && r < 0xDC00 && len(s) > i+2 && s[i+1] == '\\' && (s[i+2] == 'u' || s[i+2] == 'U') {
				if r2, n2 := hex4(s[i+3:]); n2 > 0 && 0xDC00 <= r2 && r2 < 0xE000 {
					r = (r-0xD800)<<10 + (r2 - 0xDC00) + 0x10000
					i += 2 + n2
				}
			}
			b.WriteRune(r)
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func hex4(s string) (rune, int) {
	if len(s) < 4 {
		return 0, 0
	}
	var r rune
	for _, c := range []byte(s[:4]) {
		if !isHex(c) {
			return 0, 0
		}
		r = r<<4 | rune(unhex(c))
	}
	return r, 4
}

// base64Run matches text that may be base64 (either alphabet): long enough
// to hide part of a secret.
var base64Run = regexp.MustCompile(`[A-Za-z0-9+/_-]{8,}`)

// decodeBase64Run decodes run in both alphabets, each stretch of the
// alphabet's characters at each of its four alignments (a '+' of one
// alphabet next to a '_' of the other would leave the whole run
// undecodable). Unpadded, so that a truncated or glued-on encoding still
// decodes as far as it goes; invalid UTF-8 is kept: a truncated encoding
// may cut a character of the secret and still hold a run of it.
func decodeBase64Run(run string) []string {
	var out []string
	for _, a := range []struct {
		enc   *base64.Encoding
		other string // the characters only the other alphabet has
	}{{base64.RawStdEncoding, "-_"}, {base64.RawURLEncoding, "+/"}} {
		stretches := strings.FieldsFunc(run, func(r rune) bool { return strings.ContainsRune(a.other, r) })
		for _, st := range stretches {
			for off := range 4 {
				r := st[min(off, len(st)):]
				if len(r)%4 == 1 { // cannot end a base64 text: drop it
					r = r[:len(r)-1]
				}
				if len(r) < 8 {
					continue
				}
				if b, err := a.enc.DecodeString(r); err == nil {
					out = append(out, string(b))
				}
			}
		}
	}
	return out
}

// text returns s with the plain forms of the secrets removed, control
// and non-ASCII characters replaced, capped at max characters; or
// withheld if s echoes a credential in any form (see echoes).
func (sc *scrubber) text(s string, max int) string {
	if sc.echoes(s) {
		return withheld
	}
	if !plainText(s) {
		return withheldOpaque
	}
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

// maxLabels and maxLabel bound a redirect host that is shown.
const maxLabels, maxLabel = 8, 24

// host returns h (a Location's host, port included) if it may be shown:
// it echoes no credential, normalised or not, and has at most maxLabels
// labels of at most maxLabel characters each; else "".
func (sc *scrubber) host(h string) string {
	if h == "" || sc.echoes(h) {
		return ""
	}
	name := h
	if hn, _, err := net.SplitHostPort(h); err == nil {
		name = hn
	}
	labels := strings.FieldsFunc(name, func(r rune) bool { return r == '.' || r == ':' })
	if len(labels) > maxLabels {
		return ""
	}
	for _, l := range labels {
		if len(l) > maxLabel {
			return ""
		}
	}
	return h
}
