package creds

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxFileSize bounds the files the broker is configured with (credentials,
// secret, config, CA, TLS).
const MaxFileSize = 1 << 20

// File is a parsed Kognic credentials file, as produced by "Generate
// Credentials" in the Kognic app.
type File struct {
	// Path is the name the file was loaded or parsed under.
	Path         string
	ClientID     string
	ClientSecret Secret
	Email        string
	UserID       string // "userId", a JSON integer, in decimal
	Issuer       string
	// Name, Created, Expires (UTC) and Scopes are optional.
	Name             string
	Created, Expires time.Time
	Scopes           []string
}

// LoadFile reads the credentials file at path and parses it with ParseFile,
// using path as its name. A leading "~" is expanded (ExpandHome).
func LoadFile(path string, opts ...Option) (*File, error) {
	path, data, err := readHome(path)
	if err != nil {
		return nil, err
	}
	return ParseFile(data, path, opts...)
}

// ParseFile parses the contents of a Kognic credentials file; name is used
// in errors and as File.Path. Unknown keys are ignored; credentials past
// their "expires" (WithClock) wrap ErrExpired. Errors are *FileError values
// that never quote the secret or, for invalid JSON, any byte of data.
func ParseFile(data []byte, name string, opts ...Option) (*File, error) {
	if !utf8.Valid(data) {
		return nil, fileErr(name, "", ErrMalformed, "not valid UTF-8 text (e.g. a Latin-1 byte); use the JSON file from \"Generate Credentials\" in the Kognic app")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return nil, fileErr(name, "", ErrMalformed, "not a JSON object: %s; use the JSON file from \"Generate Credentials\" in the Kognic app", describeJSONError(err))
	}
	if err := checkRequired(obj, name); err != nil {
		return nil, err
	}
	f := &File{Path: name}
	var err error
	for _, field := range []struct {
		key string
		dst *string
	}{
		{"clientId", &f.ClientID},
		{"clientSecret", (*string)(&f.ClientSecret)},
		{"email", &f.Email},
		{"issuer", &f.Issuer},
	} {
		if *field.dst, err = requiredString(obj, name, field.key); err != nil {
			return nil, err
		}
	}
	if p := secretProblem(f.ClientSecret.Reveal()); p != "" {
		return nil, fileErr(name, "clientSecret", ErrInvalidValue, "key %q %s; it must be the client secret as text", "clientSecret", p)
	}
	if f.UserID, err = userID(obj, name); err != nil {
		return nil, err
	}
	if err := f.parseOptional(obj); err != nil {
		return nil, err
	}
	o := options{now: time.Now}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if now := o.now(); !now.IsZero() && !f.Expires.IsZero() && !now.Before(f.Expires) {
		return nil, fileErr(name, "expires", ErrExpired, "credentials expired at %s (key %q); generate new credentials in the Kognic app",
			f.Expires.Format(time.RFC3339Nano), "expires")
	}
	return f, nil
}

// parseOptional reads the optional keys name, created, expires and scopes.
func (f *File) parseOptional(obj map[string]json.RawMessage) error {
	name := f.Path
	var err error
	if raw, ok := present(obj, "name"); ok {
		if json.Unmarshal(raw, &f.Name) != nil {
			return fileErr(name, "name", ErrInvalidValue, "key %q must be a string", "name")
		}
	}
	if f.Created, err = optionalTime(obj, name, "created"); err != nil {
		return err
	}
	if f.Expires, err = optionalTime(obj, name, "expires"); err != nil {
		return err
	}
	if raw, ok := present(obj, "scopes"); ok {
		if json.Unmarshal(raw, &f.Scopes) != nil || slices.Contains(f.Scopes, "") {
			return fileErr(name, "scopes", ErrInvalidValue, "key %q must be a list of non-empty strings", "scopes")
		}
	}
	return nil
}

// checkRequired names every required key missing from obj, at once.
func checkRequired(obj map[string]json.RawMessage, name string) error {
	var missing []string
	for _, key := range []string{"clientId", "clientSecret", "email", "userId", "issuer"} {
		if _, ok := obj[key]; !ok {
			missing = append(missing, strconv.Quote(key))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	s := "" // plural
	if len(missing) > 1 {
		s = "s"
	}
	return fileErr(name, strings.Trim(missing[0], `"`), ErrMissingKey, "missing required key%s %s; regenerate the file in the Kognic app or add the key%s", s, strings.Join(missing, ", "), s)
}

// Client returns the client credentials held by f.
func (f *File) Client() Client {
	return Client{
		ID:     f.ClientID,
		Secret: f.ClientSecret,
		Scopes: slices.Clone(f.Scopes),
		Source: "credentials file " + f.Path,
	}
}

// String describes f without its secret.
func (f *File) String() string {
	return fmt.Sprintf("credentials file %s (client %s)", f.Path, f.ClientID)
}

// LogValue implements slog.LogValuer; the secret is redacted.
func (f *File) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("path", f.Path),
		slog.String("client_id", f.ClientID),
		slog.Any("client_secret", f.ClientSecret),
		slog.String("email", f.Email),
		slog.String("user_id", f.UserID),
		slog.String("issuer", f.Issuer),
	}
	if !f.Expires.IsZero() {
		attrs = append(attrs, slog.Time("expires", f.Expires))
	}
	return slog.GroupValue(attrs...)
}

// describeJSONError explains why data is not a JSON object without quoting
// it, as encoding/json's syntax errors do.
func describeJSONError(err error) string {
	if err == nil {
		return "found null"
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		if strings.Contains(se.Error(), "unexpected end") {
			return fmt.Sprintf("invalid JSON: unexpected end of input at byte offset %d", se.Offset)
		}
		return fmt.Sprintf("invalid JSON syntax at byte offset %d", se.Offset)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return "found a JSON " + te.Value
	}
	return "invalid JSON"
}

// present returns the raw value of key unless it is absent or null.
func present(obj map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	raw, ok := obj[key]
	if !ok || string(raw) == "null" {
		return nil, false
	}
	return raw, true
}

func requiredString(obj map[string]json.RawMessage, name, key string) (string, error) {
	var s string
	if json.Unmarshal(obj[key], &s) != nil || strings.TrimSpace(s) == "" {
		return "", fileErr(name, key, ErrInvalidValue, "key %q must be a non-empty string", key)
	}
	return s, nil
}

// userID accepts a JSON integer, as the Kognic app writes it; a string,
// even of digits, is refused.
func userID(obj map[string]json.RawMessage, name string) (string, error) {
	raw := bytes.TrimSpace(obj["userId"])
	var n json.Number
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	// json.Number would also take a quoted number: check the raw form.
	if len(raw) > 0 && raw[0] != '"' && d.Decode(&n) == nil {
		if _, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			return n.String(), nil
		}
	}
	found := "a non-integer number"
	switch {
	case len(raw) > 0 && raw[0] == '"':
		found = "a string"
	case string(raw) == "null":
		found = "null"
	case string(raw) == "true" || string(raw) == "false":
		found = "a boolean"
	case len(raw) > 0 && (raw[0] == '[' || raw[0] == '{'):
		found = "a list or object"
	}
	return "", fileErr(name, "userId", ErrInvalidValue, "key %q must be an integer (e.g. 4711, without quotes) as in files from the Kognic app, found %s", "userId", found)
}

// timeLayouts are the ISO-8601 forms accepted for "created" and "expires"
// (time.Parse takes fractional seconds too).
var timeLayouts = []string{
	time.RFC3339,
	"2006-01-02T15:04:05Z0700",
	"2006-01-02T15:04:05", // no zone: UTC
}

func optionalTime(obj map[string]json.RawMessage, name, key string) (time.Time, error) {
	raw, ok := present(obj, key)
	if !ok {
		return time.Time{}, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return time.Time{}, fileErr(name, key, ErrInvalidValue, "key %q must be a string holding an ISO-8601 time", key)
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fileErr(name, key, ErrInvalidValue, "key %q: cannot parse %q as an ISO-8601 time (e.g. 2030-01-31T12:00:00Z)", key, s)
}

// readHome reads the regular file at path, "~" expanded (ReadFile with
// MaxFileSize), and returns the expanded path.
func readHome(path string) (string, []byte, error) {
	path, err := ExpandHome(path)
	if err != nil {
		return "", nil, err
	}
	data, err := ReadFile(path, MaxFileSize)
	if err != nil {
		return path, nil, readErr(path, err)
	}
	return path, data, nil
}

// secretProblem says why s cannot be a client secret, or returns "": it
// must be UTF-8 text without control characters, not a binary or /proc file.
func secretProblem(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8 text (e.g. a Latin-1 byte)"
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "holds a NUL or another control character"
		}
	}
	return ""
}
