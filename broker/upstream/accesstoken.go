package upstream

import (
	"encoding/base64"
	"html"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// tokenRun is how many consecutive characters of a secret count as an
// echo in an access token: more than textRun, as a large random token
// holds short runs by chance.
const tokenRun = 12

// tokenEchoes reports whether an access token carries tokenRun characters
// of a secret, case aside: as is, '+' as space, or base64-decoded from one
// of its runs, with or without one escape undone (a JWT claim). Linear.
func tokenEchoes(creds []Credential, tok string) bool {
	secrets := make([]string, len(creds))
	for i, c := range creds {
		secrets[i] = lower(c.ClientSecret.Reveal())
	}
	found := func(v string) bool { return holdsRun(lower(v), secrets, tokenRun) }
	if found(tok) || strings.Contains(tok, "+") && found(strings.ReplaceAll(tok, "+", " ")) {
		return true
	}
	// The runs of base64 characters: b64token's others are ".~=".
	for _, run := range strings.FieldsFunc(tok, func(r rune) bool { return r == '.' || r == '~' || r == '=' }) {
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
// binary decodings, which strings.ToLower does slowly.
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

// decodeBase64Run decodes run in both alphabets, each stretch of the
// alphabet's characters at each of its four alignments, unpadded, so that
// a truncated or glued-on encoding decodes as far as it goes.
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

// unescapes each undo one escape of text: percent (with and without '+'
// as space), HTML entities, JSON/PHP backslash escapes.
var unescapes = []func(string) string{
	func(s string) string { return percentDecode(s, false) },
	func(s string) string { return percentDecode(s, true) },
	html.UnescapeString,
	jsonUnescape,
}

// percentDecode undoes %XX escapes (and '+' as space if plus), leaving
// malformed ones as they are, where url.QueryUnescape gives up.
func percentDecode(s string, plus bool) string {
	if !strings.Contains(s, "%") && (!plus || !strings.Contains(s, "+")) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '%' && i+2 < len(s):
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				b.WriteByte(c)
				continue
			}
			b.WriteByte(byte(v))
			i += 2
		case c == '+' && plus:
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// jsonUnescape undoes JSON (and PHP) string escapes wherever they appear,
// surrogate pairs included; anything malformed is left as it is.
func jsonUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		r, n := jsonEscape(s[i:])
		if n == 0 {
			b.WriteByte(s[i])
			continue
		}
		b.WriteRune(r)
		i += n - 1
	}
	return b.String()
}

// jsonEscape decodes the escape that starts s: its rune and length, or
// n == 0 if there is none. \U counts too: the text may be upper-cased.
func jsonEscape(s string) (r rune, n int) {
	if len(s) < 2 || s[0] != '\\' {
		return 0, 0
	}
	if i := strings.IndexByte(`"\/'bfnrt`, s[1]); i >= 0 {
		return rune("\"\\/'\b\f\n\r\t"[i]), 2
	}
	if s[1]|0x20 != 'u' || len(s) < 6 {
		return 0, 0
	}
	v, err := strconv.ParseUint(s[2:6], 16, 16)
	if err != nil {
		return 0, 0
	}
	r = rune(v)
	if utf16.IsSurrogate(r) && len(s) >= 12 && s[6] == '\\' && s[7]|0x20 == 'u' {
		if v2, err := strconv.ParseUint(s[8:12], 16, 16); err == nil && utf16.DecodeRune(r, rune(v2)) != utf8.RuneError {
			return utf16.DecodeRune(r, rune(v2)), 12
		}
	}
	return r, 6
}
