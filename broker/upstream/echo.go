package upstream

import (
	"net"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// An IdP's text is shown by allowlist, never by decoding: the encodings
// in which it may echo a secret cannot be enumerated.

const descriptionWithheld = "description withheld"

// Limits of the error_description shown (see plainText).
const (
	MaxDescription = 200 // bytes
	maxDigits      = 10  // digits in all
	maxRun         = 15  // letters, digits, '_' and '-' in a row: a word, not a token
)

// textRun is how many consecutive characters of a secret count as an
// echo in IdP text.
const textRun = 8

// describe returns error_description s if it is plain text that echoes no
// credential, else descriptionWithheld.
func describe(creds []Credential, s string) string {
	if s == "" || plainText(s) && !echoes(creds, s) {
		return s
	}
	return descriptionWithheld
}

// plainText reports whether s is short plain language: ASCII letters,
// digits, spaces and .,;:'()!?_- within the limits above (no hex, base64
// or token-like run).
func plainText(s string) bool {
	if len(s) > MaxDescription {
		return false
	}
	digits, run := 0, 0
	for i := range len(s) {
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			digits++
			run++
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == '-':
			run++
		case strings.IndexByte(" .,;:'()!?", c) >= 0:
			run = 0
		default:
			return false
		}
		if run > maxRun || digits > maxDigits {
			return false
		}
	}
	return true
}

// echoes reports whether IdP text s holds textRun consecutive characters
// of a secret (all of a shorter one), letter case aside, also among the
// letters and digits alone and reversed or rot13'd (a secret spelt out).
func echoes(creds []Credential, s string) bool {
	var raw, norm []string
	for _, c := range creds {
		sec := c.ClientSecret.Reveal()
		raw = append(raw, lower(sec))
		if n := normalise(sec); len(n) >= textRun {
			rev := []byte(n)
			slices.Reverse(rev)
			norm = append(norm, n, string(rev), rot13(n))
		}
	}
	return holdsRun(lower(s), raw, textRun) || holdsRun(normalise(s), norm, textRun)
}

// holdsRun reports whether low holds n consecutive bytes of one of the
// lower-cased secrets, or all of one shorter than n. Linear in len(low):
// every n-run of a secret holds one of its n/2-byte pieces at a multiple
// of n/2, so only the runs around such a piece are checked.
func holdsRun(low string, secrets []string, n int) bool {
	h := n / 2
	for _, s := range secrets {
		if len(s) < n {
			if strings.Contains(low, s) {
				return true
			}
			continue
		}
		for p := 0; p+h <= len(s); p += h {
			for at := 0; ; at++ {
				i := strings.Index(low[at:], s[p:p+h])
				if i < 0 {
					break
				}
				at += i
				for r := max(0, at-h); r <= at && r+n <= len(low); r++ {
					if strings.Contains(s, low[r:r+n]) {
						return true
					}
				}
			}
		}
	}
	return false
}

// normalise lower-cases s and keeps only its ASCII letters and digits.
func normalise(s string) string {
	b := make([]byte, 0, len(s))
	for i := range len(s) {
		c := s[i] | 0x20 // lower-cases letters, keeps digits
		if 'a' <= c && c <= 'z' || '0' <= s[i] && s[i] <= '9' {
			b = append(b, c)
		}
	}
	return string(b)
}

func rot13(s string) string {
	return strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' {
			return 'a' + (r-'a'+13)%26
		}
		return r
	}, s)
}

// maxLabels and maxLabel bound a redirect host that is shown.
const maxLabels, maxLabel = 8, 24

// shownHost returns h (a Location's host) if it echoes no credential and
// looks like a host name (maxLabels, maxLabel); else "".
func shownHost(creds []Credential, h string) string {
	if h == "" || echoes(creds, h) {
		return ""
	}
	name := h
	if hn, _, err := net.SplitHostPort(h); err == nil {
		name = hn
	}
	labels := strings.FieldsFunc(name, func(r rune) bool { return r == '.' || r == ':' })
	if len(labels) > maxLabels || slices.ContainsFunc(labels, func(l string) bool { return len(l) > maxLabel }) {
		return ""
	}
	return h
}

// Echoes reports whether text shows one of secrets, as echoes does, also
// with one escape undone; text from a peer that saw a secret (an IdP, an
// API server given a token) passes it before it is shown.
func Echoes(text string, secrets ...string) bool {
	cs := make([]Credential, 0, len(secrets))
	for _, s := range secrets {
		if s != "" {
			cs = append(cs, Credential{ClientSecret: creds.Secret(s)})
		}
	}
	if len(cs) == 0 {
		return false
	}
	if echoes(cs, text) {
		return true
	}
	for _, undo := range unescapes {
		if u := undo(text); u != text && echoes(cs, u) {
			return true
		}
	}
	return false
}
