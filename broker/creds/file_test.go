package creds_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const name = "/etc/x.json"

// base is a valid credentials file; tests derive variants from it.
func base() map[string]any {
	return map[string]any{
		"clientId":     "fake-client",
		"clientSecret": fakeSecret,
		"email":        "robot@example.com",
		"userId":       4711,
		"issuer":       "auth.app.kognic.com",
	}
}

func with(kv ...any) []byte {
	m := base()
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return mustJSON(m)
}

func without(key string) []byte {
	m := base()
	delete(m, key)
	return mustJSON(m)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestParseFileErrors(t *testing.T) {
	const pre = "credentials: /etc/x.json: "
	const notObject = `; use the JSON file from "Generate Credentials" in the Kognic app`
	missing := func(key string) string {
		return pre + `missing required key "` + key + `"; regenerate the file in the Kognic app or add the key`
	}
	tests := []struct {
		name    string
		data    []byte
		want    string
		wantKey string
		wantIs  error
	}{
		{"missing clientId", without("clientId"), missing("clientId"), "clientId", creds.ErrMissingKey},
		{"missing clientSecret", without("clientSecret"), missing("clientSecret"), "clientSecret", creds.ErrMissingKey},
		{"missing email", without("email"), missing("email"), "email", creds.ErrMissingKey},
		{"missing userId", without("userId"), missing("userId"), "userId", creds.ErrMissingKey},
		{"missing issuer", without("issuer"), missing("issuer"), "issuer", creds.ErrMissingKey},
		{"empty object", []byte(`{}`), pre + `missing required keys "clientId", "clientSecret", "email", "userId", "issuer"; regenerate the file in the Kognic app or add the keys`, "clientId", creds.ErrMissingKey},
		{"not JSON", []byte("clientId=abc\n"), pre + "not a JSON object: invalid JSON syntax at byte offset 1" + notObject, "", creds.ErrMalformed},
		{"empty", []byte(""), pre + "not a JSON object: invalid JSON: unexpected end of input at byte offset 0" + notObject, "", creds.ErrMalformed},
		{"truncated", []byte(`{"clientId": "a"`), pre + "not a JSON object: invalid JSON: unexpected end of input at byte offset 16" + notObject, "", creds.ErrMalformed},
		{"trailing garbage", []byte(`{} x`), pre + "not a JSON object: invalid JSON syntax at byte offset 4" + notObject, "", creds.ErrMalformed},
		{"array", []byte(`[{"clientId": "a"}]`), pre + "not a JSON object: found a JSON array" + notObject, "", creds.ErrMalformed},
		{"string", []byte(`"abc"`), pre + "not a JSON object: found a JSON string" + notObject, "", creds.ErrMalformed},
		{"number", []byte(`42`), pre + "not a JSON object: found a JSON number" + notObject, "", creds.ErrMalformed},
		{"null", []byte(`null`), pre + "not a JSON object: found null" + notObject, "", creds.ErrMalformed},
		{"clientId number", with("clientId", 5), pre + `key "clientId" must be a non-empty string`, "clientId", creds.ErrInvalidValue},
		{"clientId empty", with("clientId", ""), pre + `key "clientId" must be a non-empty string`, "clientId", creds.ErrInvalidValue},
		{"clientId blank", with("clientId", "  "), pre + `key "clientId" must be a non-empty string`, "clientId", creds.ErrInvalidValue},
		{"clientId null", with("clientId", nil), pre + `key "clientId" must be a non-empty string`, "clientId", creds.ErrInvalidValue},
		{"clientSecret object", with("clientSecret", map[string]string{"v": fakeSecret}), pre + `key "clientSecret" must be a non-empty string`, "clientSecret", creds.ErrInvalidValue},
		{"clientSecret empty", with("clientSecret", ""), pre + `key "clientSecret" must be a non-empty string`, "clientSecret", creds.ErrInvalidValue},
		{"email list", with("email", []string{"a@b"}), pre + `key "email" must be a non-empty string`, "email", creds.ErrInvalidValue},
		{"issuer bool", with("issuer", true), pre + `key "issuer" must be a non-empty string`, "issuer", creds.ErrInvalidValue},
		{"userId float", with("userId", 1.5), pre + `key "userId" must be an integer (e.g. 4711, without quotes) as in files from the Kognic app, found a non-integer number`, "userId", creds.ErrInvalidValue},
		{"userId bool", with("userId", false), pre + `key "userId" must be an integer (e.g. 4711, without quotes) as in files from the Kognic app, found a boolean`, "userId", creds.ErrInvalidValue},
		{"userId empty", with("userId", ""), pre + `key "userId" must be an integer (e.g. 4711, without quotes) as in files from the Kognic app, found a string`, "userId", creds.ErrInvalidValue},
		{"userId digit string", with("userId", "4711"), pre + `key "userId" must be an integer (e.g. 4711, without quotes) as in files from the Kognic app, found a string`, "userId", creds.ErrInvalidValue},
		{"userId null", with("userId", nil), pre + `key "userId" must be an integer (e.g. 4711, without quotes) as in files from the Kognic app, found null`, "userId", creds.ErrInvalidValue},
		{"userId exponent", []byte(strings.Replace(string(base2json()), "4711", "4.711e3", 1)), pre + `key "userId" must be an integer (e.g. 4711, without quotes) as in files from the Kognic app, found a non-integer number`, "userId", creds.ErrInvalidValue},
		{"several keys missing", []byte(`{"clientId":"a","clientSecret":"b"}`), pre + `missing required keys "email", "userId", "issuer"; regenerate the file in the Kognic app or add the keys`, "email", creds.ErrMissingKey},
		{"name number", with("name", 1), pre + `key "name" must be a string`, "name", creds.ErrInvalidValue},
		{"scopes string", with("scopes", "a b"), pre + `key "scopes" must be a list of non-empty strings`, "scopes", creds.ErrInvalidValue},
		{"scopes numbers", with("scopes", []int{1}), pre + `key "scopes" must be a list of non-empty strings`, "scopes", creds.ErrInvalidValue},
		{"scopes empty string", with("scopes", []string{"a", ""}), pre + `key "scopes" must be a list of non-empty strings`, "scopes", creds.ErrInvalidValue},
		{"expires number", with("expires", 1700000000), pre + `key "expires" must be a string holding an ISO-8601 time`, "expires", creds.ErrInvalidValue},
		{"expires garbage", with("expires", "garbage"), pre + `key "expires": cannot parse "garbage" as an ISO-8601 time (e.g. 2030-01-31T12:00:00Z)`, "expires", creds.ErrInvalidValue},
		{"expires date only", with("expires", "2030-01-01"), pre + `key "expires": cannot parse "2030-01-01" as an ISO-8601 time (e.g. 2030-01-31T12:00:00Z)`, "expires", creds.ErrInvalidValue},
		{"created garbage", with("created", "yesterday"), pre + `key "created": cannot parse "yesterday" as an ISO-8601 time (e.g. 2030-01-31T12:00:00Z)`, "created", creds.ErrInvalidValue},
		{"expired", with("expires", "2024-01-01T00:00:00Z"), pre + `credentials expired at 2024-01-01T00:00:00Z (key "expires"); generate new credentials in the Kognic app`, "expires", creds.ErrExpired},
		{"expired exactly now", with("expires", now.Format(time.RFC3339)), pre + `credentials expired at 2025-06-01T12:00:00Z (key "expires"); generate new credentials in the Kognic app`, "expires", creds.ErrExpired},
		{"expired with offset", with("expires", "2024-01-01T02:00:00.5+02:00"), pre + `credentials expired at 2024-01-01T00:00:00.5Z (key "expires"); generate new credentials in the Kognic app`, "expires", creds.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := creds.ParseFile(tt.data, name, creds.WithClock(func() time.Time { return now }))
			if err == nil {
				t.Fatalf("ParseFile succeeded: %+v", f)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(err, %v) = false", tt.wantIs)
			}
			fe, ok := errors.AsType[*creds.FileError](err)
			if !ok {
				t.Fatalf("error is %T, want *FileError", err)
			}
			if fe.Path != name || fe.Key != tt.wantKey {
				t.Errorf("FileError{Path: %q, Key: %q}, want {%q, %q}", fe.Path, fe.Key, name, tt.wantKey)
			}
		})
	}
}

func TestParseFileValid(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		now  time.Time
		want creds.File
	}{
		{
			name: "required keys only, userId number",
			data: base2json(),
			now:  now,
			want: creds.File{Path: name, ClientID: "fake-client", ClientSecret: fakeSecret, Email: "robot@example.com", UserID: "4711", Issuer: "auth.app.kognic.com"},
		},
		{
			name: "large userId, optional nulls, unknown keys",
			data: with("userId", 9007199254740993, "name", nil, "expires", nil, "scopes", nil, "future", map[string]int{"x": 1}),
			now:  now,
			want: creds.File{Path: name, ClientID: "fake-client", ClientSecret: fakeSecret, Email: "robot@example.com", UserID: "9007199254740993", Issuer: "auth.app.kognic.com"},
		},
		{
			name: "all optional keys",
			data: with("name", "CI", "created", "2024-05-02T10:11:12.345678Z", "expires", "2030-01-01T01:00:00+01:00", "scopes", []string{"b", "a"}),
			now:  now,
			want: creds.File{
				Path: name, ClientID: "fake-client", ClientSecret: fakeSecret, Email: "robot@example.com", UserID: "4711", Issuer: "auth.app.kognic.com",
				Name:    "CI",
				Created: time.Date(2024, 5, 2, 10, 11, 12, 345678000, time.UTC),
				Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
				Scopes:  []string{"b", "a"},
			},
		},
		{
			name: "times without zone are UTC",
			data: with("created", "2024-05-02T10:11:12", "expires", "2030-01-01T00:00:00.123"),
			now:  now,
			want: creds.File{
				Path: name, ClientID: "fake-client", ClientSecret: fakeSecret, Email: "robot@example.com", UserID: "4711", Issuer: "auth.app.kognic.com",
				Created: time.Date(2024, 5, 2, 10, 11, 12, 0, time.UTC),
				Expires: time.Date(2030, 1, 1, 0, 0, 0, 123000000, time.UTC),
			},
		},
		{
			name: "zone without colon",
			data: with("expires", "2030-01-01T00:00:00+0000"),
			now:  now,
			want: creds.File{
				Path: name, ClientID: "fake-client", ClientSecret: fakeSecret, Email: "robot@example.com", UserID: "4711", Issuer: "auth.app.kognic.com",
				Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
			},
		},
		{
			name: "zero now skips the expiry check",
			data: with("expires", "2001-01-01T00:00:00Z"),
			want: creds.File{
				Path: name, ClientID: "fake-client", ClientSecret: fakeSecret, Email: "robot@example.com", UserID: "4711", Issuer: "auth.app.kognic.com",
				Expires: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := creds.ParseFile(tt.data, name, creds.WithClock(func() time.Time { return tt.now }))
			if err != nil {
				t.Fatal(err)
			}
			assertFile(t, got, &tt.want)
		})
	}
}

func base2json() []byte { return mustJSON(base()) }

func assertFile(t *testing.T, got, want *creds.File) {
	t.Helper()
	if got.Path != want.Path || got.ClientID != want.ClientID || got.ClientSecret.Reveal() != want.ClientSecret.Reveal() ||
		got.Email != want.Email || got.UserID != want.UserID || got.Issuer != want.Issuer || got.Name != want.Name ||
		!got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) || got.Created.Location() != want.Created.Location() ||
		got.Expires.Location() != want.Expires.Location() || !slices.Equal(got.Scopes, want.Scopes) {
		t.Errorf("got  %#v\nwant %#v", *got, *want)
	}
}

func TestLoadFile(t *testing.T) {
	got, err := creds.LoadFile("testdata/valid.json", creds.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, got, &creds.File{
		Path: "testdata/valid.json", ClientID: "fake-client-id-0001", ClientSecret: "FAKE-SECRET-do-not-use-0001",
		Email: "robot@example.com", UserID: "4711", Issuer: "auth.app.kognic.com", Name: "CI robot",
		Created: time.Date(2024, 5, 2, 10, 11, 12, 345678000, time.UTC),
		Expires: time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC),
		Scopes:  []string{"write:inputs", "read:inputs"},
	})
	c := got.Client()
	if c.ID != "fake-client-id-0001" || c.Secret.Reveal() != "FAKE-SECRET-do-not-use-0001" ||
		!slices.Equal(c.Scopes, []string{"write:inputs", "read:inputs"}) || c.Source != "credentials file testdata/valid.json" {
		t.Errorf("Client() = %#v", c)
	}
	c.Scopes[0] = "changed"
	if got.Scopes[0] != "write:inputs" {
		t.Error("Client().Scopes shares its backing array with File.Scopes")
	}
	if s := got.String(); s != "credentials file testdata/valid.json (client fake-client-id-0001)" {
		t.Errorf("String() = %q", s)
	}

	got, err = creds.LoadFile("testdata/minimal.json", creds.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, got, &creds.File{
		Path: "testdata/minimal.json", ClientID: "fake-client-id-0002", ClientSecret: "FAKE-SECRET-do-not-use-0002",
		Email: "robot2@example.com", UserID: "4712", Issuer: "auth.app.kognic.com",
	})

	_, err = creds.LoadFile("testdata/expired.json", creds.WithClock(func() time.Time { return now }))
	if want := `credentials: testdata/expired.json: credentials expired at 2024-01-01T00:00:00Z (key "expires"); generate new credentials in the Kognic app`; err == nil || err.Error() != want {
		t.Errorf("LoadFile(expired) = %v, want %s", err, want)
	}
}

func TestLoadFileUnreadable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.json")
	_, err := creds.LoadFile(missing, creds.WithClock(func() time.Time { return now }))
	if want := "credentials: " + missing + ": cannot open file: no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", err)
	}

	dir := t.TempDir()
	_, err = creds.LoadFile(dir, creds.WithClock(func() time.Time { return now }))
	if want := "credentials: " + dir + ": cannot open file: is a directory, not a regular file; point it at the file itself"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}

	big := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(big, make([]byte, 1<<20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = creds.LoadFile(big, creds.WithClock(func() time.Time { return now }))
	if want := "credentials: " + big + ": file is larger than 1048576 bytes; point to the credentials file itself"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// TestErrorsNeverContainSecret damages a valid file in many ways and checks
// that no resulting error mentions the secret, in any formatting.
func TestErrorsNeverContainSecret(t *testing.T) {
	valid := mustJSON(map[string]any{
		"clientId": "fake-client", "clientSecret": fakeSecret, "email": "e@x",
		"userId": 1, "issuer": "i", "expires": "2030-01-01T00:00:00Z",
	})
	var inputs [][]byte
	for n := range len(valid) {
		inputs = append(inputs, valid[:n]) // every truncation
		for _, junk := range []byte{'x', '"', '}', ',', 0, '\n', 0xff} {
			b := slices.Clone(valid)
			b[n] = junk
			inputs = append(inputs, b) // every single-byte corruption
		}
	}
	// The secret placed where each kind of error is reported.
	for _, key := range []string{"clientId", "email", "userId", "issuer", "name", "created", "expires", "scopes"} {
		m := base()
		m[key] = map[string]string{"x": fakeSecret}
		inputs = append(inputs, mustJSON(m))
	}
	inputs = append(inputs,
		[]byte(fakeSecret),
		[]byte(`{"clientSecret": "`+fakeSecret+"\x01\"}"),
		[]byte(`{"clientSecret": `+fakeSecret+`}`),
		[]byte(`["`+fakeSecret+`"]`),
		[]byte(`"`+fakeSecret+`"`),
		with("clientSecret", []string{fakeSecret}),
		with("clientSecret", 12345, "clientId", fakeSecret+"x"),
	)
	// JSON syntax errors from encoding/json quote the offending byte; ours
	// must not quote any byte of the input.
	malformed := regexp.MustCompile(`^credentials: /etc/x.json: (not a JSON object: ` +
		`(invalid JSON syntax at byte offset \d+|invalid JSON: unexpected end of input at byte offset \d+|found a JSON (array|string|number|bool)|found null)|` +
		`not valid UTF-8 text \(e.g. a Latin-1 byte\)); use the JSON file from "Generate Credentials" in the Kognic app$`)
	failures := 0
	for _, in := range inputs {
		_, err := creds.ParseFile(in, name, creds.WithClock(func() time.Time { return now }))
		if err == nil {
			continue
		}
		if errors.Is(err, creds.ErrMalformed) && !malformed.MatchString(err.Error()) {
			t.Errorf("malformed-file error may quote the input %q:\n%s", in, err)
		}
		for _, s := range []string{err.Error(), fmtAll(err)} {
			if strings.Contains(s, fakeSecret) || strings.Contains(s, fakeSecret[:12]) {
				failures++
				if failures < 5 {
					t.Errorf("error leaks the secret for input %q:\n%s", in, s)
				}
			}
		}
	}
	if failures > 0 {
		t.Errorf("%d leaking errors", failures)
	}
	if len(inputs) < 500 {
		t.Fatalf("only %d inputs", len(inputs))
	}
}

func fmtAll(err error) string {
	var b strings.Builder
	for _, v := range []string{"%v", "%+v", "%#v", "%q"} {
		b.WriteString(fmt.Sprintf(v, err))
	}
	fe, _ := errors.AsType[*creds.FileError](err)
	b.WriteString(fmt.Sprintf("%#v", fe))
	return b.String()
}

func TestFileLogValueRedactsSecret(t *testing.T) {
	f, err := creds.LoadFile("testdata/valid.json", creds.WithClock(func() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }))
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("loaded", "credentials", f)
	out := logs.String()
	if strings.Contains(out, f.ClientSecret.Reveal()) || !strings.Contains(out, `"client_secret":"[REDACTED]"`) || !strings.Contains(out, `"client_id":"fake-client-id-0001"`) {
		t.Errorf("logged credentials file: %s", out)
	}
}
