package creds_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

const fakeSecret = "FAKE-SECRET-do-not-use-xyzzy"

type holder struct {
	Name   string
	Secret creds.Secret
	Ptr    *creds.Secret
	List   []creds.Secret
	Map    map[string]creds.Secret
}

func newHolder() holder {
	s := creds.Secret(fakeSecret)
	return holder{
		Name:   "acme",
		Secret: s,
		Ptr:    &s,
		List:   []creds.Secret{s},
		Map:    map[string]creds.Secret{"k": s},
	}
}

func TestSecretFormatting(t *testing.T) {
	s := creds.Secret(fakeSecret)
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"String", s.String(), "[REDACTED]"},
		{"GoString", s.GoString(), "[REDACTED]"},
		{"%v", fmt.Sprintf("%v", s), "[REDACTED]"},
		{"%+v", fmt.Sprintf("%+v", s), "[REDACTED]"},
		{"%#v", fmt.Sprintf("%#v", s), "[REDACTED]"},
		{"%s", fmt.Sprintf("%s", s), "[REDACTED]"},
		{"%q", fmt.Sprintf("%q", s), `"[REDACTED]"`},
		{"%x", fmt.Sprintf("%x", s), "[REDACTED]"},
		{"%X", fmt.Sprintf("%X", s), "[REDACTED]"},
		{"%d", fmt.Sprintf("%d", s), "[REDACTED]"},
		{"%12s", fmt.Sprintf("%12s|", s), "  [REDACTED]|"},
		{"%-12s", fmt.Sprintf("%-12s|", s), "[REDACTED]  |"},
		{"pointer %v", fmt.Sprintf("%v", &s), "[REDACTED]"},
		{"Sprint", fmt.Sprint(s), "[REDACTED]"},
		{"Sprintln", fmt.Sprintln(s), "[REDACTED]\n"},
		{"empty String", creds.Secret("").String(), ""},
		{"empty %q", fmt.Sprintf("%q", creds.Secret("")), `""`},
		{"empty %#v", fmt.Sprintf("%#v", creds.Secret("")), ""},
		{"Reveal", s.Reveal(), fakeSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestSecretInStruct(t *testing.T) {
	h := newHolder()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		t.Run(verb, func(t *testing.T) {
			out := fmt.Sprintf(verb, h)
			if strings.Contains(out, fakeSecret) {
				t.Fatalf("fmt %s leaked the secret: %s", verb, out)
			}
			if !strings.Contains(out, "[REDACTED]") || !strings.Contains(out, "acme") {
				t.Errorf("fmt %s = %s, want the redacted marker and the other fields", verb, out)
			}
		})
	}
	if got, want := fmt.Sprintf("%+v", struct{ S creds.Secret }{"x"}), "{S:[REDACTED]}"; got != want {
		t.Errorf("%%+v = %s, want %s", got, want)
	}
	if got, want := fmt.Sprintf("%#v", struct{ S creds.Secret }{"x"}), "struct { S creds.Secret }{S:[REDACTED]}"; got != want {
		t.Errorf("%%#v = %s, want %s", got, want)
	}
}

func TestSecretJSONAndText(t *testing.T) {
	out, err := json.Marshal(newHolder())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Name":"acme","Secret":"[REDACTED]","Ptr":"[REDACTED]","List":["[REDACTED]"],"Map":{"k":"[REDACTED]"}}`
	if string(out) != want {
		t.Errorf("json.Marshal = %s, want %s", out, want)
	}
	out, err = json.Marshal(struct{ S creds.Secret }{})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `{"S":""}` {
		t.Errorf("json.Marshal empty = %s", out)
	}
	text, _ := creds.Secret(fakeSecret).MarshalText()
	if string(text) != "[REDACTED]" {
		t.Errorf("MarshalText = %s", text)
	}
}

func TestSecretSlog(t *testing.T) {
	handlers := map[string]func(*bytes.Buffer) slog.Handler{
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	}
	for name, newHandler := range handlers {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(newHandler(&buf))
			s := creds.Secret(fakeSecret)
			log.Info("x", "secret", s, "holder", newHolder(), "ptr", &s)
			log.Info("x", slog.Any("secret", s), slog.Group("g", "secret", s))
			log.With("secret", s).Info("x")
			out := buf.String()
			if strings.Contains(out, fakeSecret) {
				t.Fatalf("slog %s handler leaked the secret:\n%s", name, out)
			}
			if n := strings.Count(out, "[REDACTED]"); n < 8 {
				t.Errorf("slog %s output has %d redaction markers, want at least 8:\n%s", name, n, out)
			}
		})
	}
}

func TestSecretEqual(t *testing.T) {
	a := creds.Secret("abc")
	if !a.Equal("abc") || a.Equal("abd") || a.Equal("ab") || a.Equal("") {
		t.Error("Equal gives wrong results")
	}
}

func sprintfV(v any) string { return fmt.Sprintf("%#v", v) }
