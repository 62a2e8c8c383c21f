package creds_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// FuzzCredentialsFile: ParseFile never panics, and every rejection is a
// *FileError of a known kind whose message never holds the clientSecret.
// Seeds are in testdata/fuzz/FuzzCredentialsFile.
func FuzzCredentialsFile(f *testing.F) {
	f.Add([]byte(`{"clientId":"a","clientSecret":"fuzz-secret-1","email":"e","userId":1,"issuer":"i"}`))
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := creds.ParseFile(data, "fuzz.json", creds.WithClock(func() time.Time { return now }))
		if err == nil {
			if file.ClientID == "" || file.ClientSecret.Reveal() == "" || file.UserID == "" {
				t.Fatalf("accepted a file without clientId, clientSecret or userId: %v", file)
			}
			// A secret of a few characters ("0") occurs in any text by
			// chance; a real one is long enough to be recognised.
			if secret := file.ClientSecret.Reveal(); len(secret) >= 8 && strings.Contains(file.String(), secret) {
				t.Fatal("File.String shows the secret")
			}
			return
		}
		fe, ok := errors.AsType[*creds.FileError](err)
		if !ok {
			t.Fatalf("error %T %v, want *creds.FileError", err, err)
		}
		if !errors.Is(err, creds.ErrMalformed) && !errors.Is(err, creds.ErrMissingKey) &&
			!errors.Is(err, creds.ErrInvalidValue) && !errors.Is(err, creds.ErrExpired) {
			t.Fatalf("error %v is of no known kind", err)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "credentials: fuzz.json: ") || len(msg) > 400+len(fe.Key) {
			t.Fatalf("unclear or unbounded error (%d bytes): %q", len(msg), msg)
		}
		// The same file with a recognisable secret: the error must not
		// show it.
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) == nil && obj != nil {
			const marker = "Qx9-marker-secret-7Zk"
			obj["clientSecret"] = json.RawMessage(`"` + marker + `"`)
			again, _ := json.Marshal(obj)
			if _, err := creds.ParseFile(again, "fuzz.json", creds.WithClock(func() time.Time { return now })); err != nil && strings.Contains(err.Error(), marker) {
				t.Fatalf("error %q contains the client secret", err)
			}
		}
	})
}
