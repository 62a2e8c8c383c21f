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

// Secret is a secret string that redacts itself: String, GoString, Format
// (all fmt verbs), LogValue, MarshalJSON and MarshalText show [Redacted] for
// a non-empty secret and "" for an empty one. Reveal returns the value.
//
// The redaction relies on methods, so it cannot work where no method is
// called: fmt prints unexported struct fields through reflection,
// encoding/json writes string-kinded map keys directly, and string(s) is a
// plain string. Keep a Secret in an exported field and never use it as a map
// key; a type that holds one in an unexported field needs its own String and
// LogValue methods.
type Secret string

// Reveal returns the secret value. It is the only intended way out; call it
// only where the value is sent to the token endpoint.
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

// Format implements fmt.Formatter: every verb prints the redacted form; %q
// quotes it. Width and the '-' flag are honoured.
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

// MarshalJSON implements json.Marshaler: the JSON string "[REDACTED]", or ""
// for an empty secret.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

// MarshalText implements encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
