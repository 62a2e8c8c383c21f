package upstream

import (
	"bytes"
	"compress/gzip"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// hostile are the encodings of the issue 7b red team's IdP: plainText or
// the normalised echo check must withhold them.
var hostile = []struct {
	name string
	f    func(string) string
}{
	{"hex", func(s string) string { return hex.EncodeToString([]byte(s)) }},
	{"HEX", func(s string) string { return strings.ToUpper(hex.EncodeToString([]byte(s))) }},
	{"colon hex", func(s string) string { return joinBytes(s, "%02x", ":") }},
	{"spaced hex", func(s string) string { return joinBytes(s, "%02x", " ") }},
	{"quoted-printable", func(s string) string { return joinBytes(s, "=%02X", "") }},
	{`\x escapes`, func(s string) string { return joinBytes(s, `\x%02x`, "") }},
	{`spaced \x escapes`, func(s string) string { return joinBytes(s, `\x%02x`, " ") }},
	{"octal escapes", func(s string) string { return joinBytes(s, `\%03o`, "") }},
	{"%u escapes", func(s string) string { return joinBytes(s, `%%u%04X`, "") }},
	{"decimal byte list", func(s string) string { return joinBytes(s, "%d", ", ") }},
	{"decimal bytes", func(s string) string { return joinBytes(s, "%d", " ") }},
	{"base32", func(s string) string { return base32.StdEncoding.EncodeToString([]byte(s)) }},
	{"gzip+base64", func(s string) string {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return base64.StdEncoding.EncodeToString(b.Bytes())
	}},
	{"triple base64", func(s string) string {
		for range 3 {
			s = base64.StdEncoding.EncodeToString([]byte(s))
		}
		return s
	}},
	{"base64 of hex", func(s string) string { return base64.StdEncoding.EncodeToString([]byte(hex.EncodeToString([]byte(s)))) }},
	{"5-level URL escape", func(s string) string {
		for range 5 {
			s = url.QueryEscape(s)
		}
		return s
	}},
	{"reversed", func(s string) string { r := []rune(s); slices.Reverse(r); return string(r) }},
	{"rot13", rot13Case},
	{"one char at a time", func(s string) string { return strings.Join(strings.Split(s, ""), " ") }},
	{"zero-width spaced", func(s string) string { return strings.Join(strings.Split(s, ""), "\u200b") }},
	{"11-char chunks with bars", func(s string) string { return strings.Join(chunks(s, 11), " | ") }},
	{"11-char chunks in tags", func(s string) string { return "<i>" + strings.Join(chunks(s, 11), "</i> <i>") + "</i>" }},
}

func joinBytes(s, format, sep string) string {
	var parts []string
	for _, c := range []byte(s) {
		parts = append(parts, fmt.Sprintf(format, c))
	}
	return strings.Join(parts, sep)
}

func rot13Case(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z':
			return 'a' + (r-'a'+13)%26
		case 'A' <= r && r <= 'Z':
			return 'A' + (r-'A'+13)%26
		}
		return r
	}, s)
}

func chunks(s string, n int) []string {
	r := []rune(s)
	var out []string
	for len(r) > 0 {
		k := min(n, len(r))
		out = append(out, string(r[:k]))
		r = r[k:]
	}
	return out
}

func isWithheld(s string) bool { return s == descriptionWithheld }

// Every hostile encoding of the red team's secret (and of id:secret) is
// withheld.
func TestDescribeWithholdsHostileEncodings(t *testing.T) {
	for _, sec := range []string{faultidp.RedTeamSecret, faultidp.NastySecret, "Zr8vQm2LxW4nTk7pYc3H"} {
		cs := []Credential{{ClientID: "rt7client", ClientSecret: creds.Secret(sec)}}
		for _, h := range hostile {
			for _, piece := range []string{sec, "rt7client:" + sec} {
				text := "Client authentication failed: " + h.f(piece)
				if got := describe(cs, text); !isWithheld(got) {
					t.Errorf("secret %q through %s as %q: shown as %q", sec, h.name, text, got)
				}
			}
		}
	}
}

// Property: a random piece of a random secret (the whole, or a run with at
// least textRun letters and digits) through one hostile encoding, inside
// ordinary words, is withheld.
func TestDescribePropertyWithholdsHostileEncodings(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	alphabet := []rune(secretAlphabet)
	for i := range 2000 {
		secret := make([]rune, 16+rng.IntN(32))
		for j := range secret {
			secret[j] = alphabet[rng.IntN(len(alphabet))]
		}
		cs := []Credential{{ClientID: "client-7", ClientSecret: creds.Secret(string(secret))}}
		piece := string(secret)
		if rng.IntN(2) == 0 {
			n := 12 + rng.IntN(len(secret)-11)
			start := rng.IntN(len(secret) - n + 1)
			piece = string(secret[start : start+n])
		}
		if len(normalise(piece)) < textRun {
			continue // too little of the secret to tell from chance (see README)
		}
		h := hostile[rng.IntN(len(hostile))]
		text := []string{"invalid client ", "The secret was ", "got: ", ""}[rng.IntN(4)] + h.f(piece) + []string{"", " rejected", ".", " please retry"}[rng.IntN(4)]
		if got := describe(cs, text); !isWithheld(got) {
			t.Fatalf("case %d: secret %q piece %q through %s as %q: shown as %q", i, string(secret), piece, h.name, text, got)
		}
	}
}

// A redirect host split into labels of the secret, or with labels too
// long for a name, is withheld; ordinary hosts are shown.
func TestShownRedirectHost(t *testing.T) {
	const sec = "Zr8vQm2LxW4nTk7pYc3H"
	cs := []Credential{{ClientID: "cid", ClientSecret: creds.Secret(sec)}}
	for _, h := range []string{
		"zr8vq.m2lxw.4ntk7.pyc3h.evil.example",
		"zr8vqm2l.idp.example:8443",
		"h3cyp7ktn4wxl2mqv8rz.example", // reversed
		"me8idz2ykj4jgx7clp3u.example", // rot13
		"a.b.c.d.e.f.g.h.i.example",
		"mzsgs3tf-ojzw2zlsmnzgk4tb.example",
	} {
		if got := shownHost(cs, h); got != "" {
			t.Errorf("host(%q) = %q, want it withheld", h, got)
		}
	}
	for _, h := range []string{"127.0.0.1:8443", "login.microsoftonline.com", "[::1]:9000", "idp.example.com"} {
		if got := shownHost(cs, h); got != h {
			t.Errorf("host(%q) = %q, want it shown", h, got)
		}
	}
}
