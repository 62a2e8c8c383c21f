package creds

import (
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// Redacted is what a non-empty Secret shows instead of its value.
const Redacted = "[REDACTED]"

// Secret is a secret string that shows [Redacted] (or "" when empty) in
// every textual form: fmt verbs, slog, JSON, text. Reveal returns the value.
// The redaction relies on methods: fmt prints unexported fields by
// reflection and JSON writes map keys directly, so keep a Secret in an
// exported field and never use it as a map key.
type Secret string

// Reveal returns the secret; call it only where it is sent.
func (s Secret) Reveal() string { return string(s) }

// Equal reports whether s and t are equal, in constant time for equal lengths.
func (s Secret) Equal(t Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(t)) == 1
}

// String returns [Redacted], or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString returns the same as String, so %#v redacts too.
func (s Secret) GoString() string { return s.String() }

// Format prints the redacted form for every verb; %q quotes it, and width
// and '-' are honoured.
func (s Secret) Format(f fmt.State, verb rune) {
	out := s.String()
	if verb == 'q' {
		out = strconv.Quote(out)
	}
	if w, ok := f.Width(); ok && w > len(out) {
		pad := fmt.Sprintf("%*s", w-len(out), "")
		if f.Flag('-') {
			out += pad
		} else {
			out = pad + out
		}
	}
	_, _ = io.WriteString(f, out)
}

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler with the redacted form.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

// MarshalText implements encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
