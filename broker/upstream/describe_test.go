package upstream

import (
	"encoding/base64"
	"fmt"
	"html"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// wrappers are the encodings an IdP may apply, composed at random by
// TestDescribePropertyNeverLetsASecretThrough.
var wrappers = []struct {
	name string
	f    func(string) string
}{
	{"query", url.QueryEscape},
	{"path", url.PathEscape},
	{"html", html.EscapeString},
	{"entities", func(s string) string { return entities(s, "&#%d;") }},
	{"hex entities", func(s string) string { return entities(s, "&#x%x;") }},
	{"php json", faultidp.PHPJSON},
	{"base64", func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }},
	{"base64url", func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }},
	{"upper", strings.ToUpper},
}

func entities(s, format string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, format, r)
		}
	}
	return b.String()
}

const secretAlphabet = `abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/+=&%"<>'\:;,. -_~?#ü€ß😀`

// Property: for random secrets, a random piece of the secret (all of it,
// or a run of at least 12 characters) passed through up to three random
// wrappers (at most one base64, not upper-cased), with or without "id:" in front, and
// embedded in random text, is never shown: the description is withheld.
func TestDescribePropertyNeverLetsASecretThrough(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	alphabet := []rune(secretAlphabet)
	for i := range 3000 {
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
		if rng.IntN(3) == 0 {
			piece = "client-7:" + piece
		}
		var applied []string
		base64Used := false
		for range rng.IntN(4) {
			w := wrappers[rng.IntN(len(wrappers))]
			if w.name == "upper" && base64Used {
				continue // base64 is case-sensitive: upper-casing it destroys it
			}
			if strings.HasPrefix(w.name, "base64") {
				if base64Used {
					continue
				}
				base64Used = true
			}
			piece = w.f(piece)
			applied = append(applied, w.name)
		}
		text := []string{"invalid client ", "secret was '", "got: ", "x", ""}[rng.IntN(5)] + piece + []string{"", " rejected", "'.", "&foo=bar", "=="}[rng.IntN(5)]
		if got := describe(cs, text); !isWithheld(got) {
			t.Fatalf("case %d: secret %q through %v as %q: description %q, want it withheld", i, string(secret), applied, text, got)
		}
	}
}

// The rule does not withhold text that merely shares short pieces or
// common words with a secret.
func TestDescribeKeepsHarmlessText(t *testing.T) {
	cs := []Credential{{ClientID: "the client", ClientSecret: creds.Secret(faultidp.RedTeamSecret)}}
	for _, s := range []string{
		"client authentication failed",
		"The client credentials are invalid; check client_id Qz9K and retry",
		"scope read:all is not allowed for this client",
		"Client authentication failed",
		"The client credentials are invalid",
		"Bad request: missing grant_type",
		"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.",
		"Client is not allowed to use grant type - see the docs",
	} {
		if got := describe(cs, s); got != s {
			t.Errorf("description(%q) = %q, want it shown", s, got)
		}
	}
}

// Each rule of the allowlist withholds a description on its own; text
// just inside every bound is shown.
func TestDescribeAllowlist(t *testing.T) {
	cs := []Credential{{ClientID: "cid", ClientSecret: creds.Secret("a.b-c_d")}, {ClientID: "cid", ClientSecret: creds.Secret("Zr8vQm2LxW4nTk7pYc3H")}}
	for _, tc := range []struct {
		why, text string
		shown     bool
	}{
		{"plain text", "The client is not allowed to use this grant type (see the docs)!", true},
		{"10 digits", "AADSTS7000215: retry in 120 s", true},
		{"a run of 15", "the client_identity is unknown", true},
		{"200 bytes", strings.Repeat("abcd ", 40), true},
		{"201 bytes", strings.Repeat("abcd ", 40) + "x", false},
		{"11 digits", "AADSTS7000215: retry in 1200 s", false},
		{"a run of 16", "the client_secret_id is unknown", false},
		{"a URL's path", "see https://docs.example/x", false},
		{"a GUID", "Trace ID 0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", false},
		{"non-ASCII", "client authentication failed \u00e9", false},
		{"a control character", "client authentication\nfailed", false},
		{"a secret shorter than textRun, whole", "bad secret a.b-c_d", false},
		{"8 characters of a secret", "secret starting Zr8vQm2L rejected", false},
		{"7 characters of a secret", "secret starting Zr8vQm2 rejected", true},
		{"a secret spelt out", "got Z r 8 v Q m 2 L x", false},
	} {
		if got := describe(cs, tc.text); (got == tc.text) != tc.shown || !tc.shown && got != descriptionWithheld {
			t.Errorf("%s: describe(%q) = %q, want shown %v", tc.why, tc.text, got, tc.shown)
		}
	}
}
