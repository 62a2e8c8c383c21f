package creds_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := kv[k]
		return v, ok
	}
}

func TestFromEnv(t *testing.T) {
	const (
		idOnly     = "credentials: KOGNIC_CLIENT_ID is set but KOGNIC_CLIENT_SECRET is not; set both, or set KOGNIC_CREDENTIALS to a credentials file"
		secretOnly = "credentials: KOGNIC_CLIENT_SECRET is set but KOGNIC_CLIENT_ID is not; set both, or set KOGNIC_CREDENTIALS to a credentials file"
		none       = "credentials: none found: set KOGNIC_CREDENTIALS to a credentials file, or KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET"
	)
	fileClient := creds.Client{
		ID: "fake-client-id-0001", Secret: "FAKE-SECRET-do-not-use-0001",
		Scopes: []string{"write:inputs", "read:inputs"}, Source: "credentials file testdata/valid.json",
	}
	envClient := creds.Client{ID: "env-id", Secret: "env-secret", Source: "KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET"}
	tests := []struct {
		name    string
		env     map[string]string
		want    creds.Client
		wantErr string
		wantIs  error
	}{
		{name: "nothing", env: nil, wantErr: none, wantIs: creds.ErrNoCredentials},
		{name: "all empty", env: map[string]string{"KOGNIC_CREDENTIALS": "", "KOGNIC_CLIENT_ID": "", "KOGNIC_CLIENT_SECRET": " "}, wantErr: none, wantIs: creds.ErrNoCredentials},
		{name: "id and secret", env: map[string]string{"KOGNIC_CLIENT_ID": "env-id", "KOGNIC_CLIENT_SECRET": "env-secret"}, want: envClient},
		{name: "file wins over id and secret", env: map[string]string{"KOGNIC_CREDENTIALS": "testdata/valid.json", "KOGNIC_CLIENT_ID": "env-id", "KOGNIC_CLIENT_SECRET": "env-secret"}, want: fileClient},
		{name: "file only", env: map[string]string{"KOGNIC_CREDENTIALS": "testdata/valid.json"}, want: fileClient},
		{name: "empty file var falls through", env: map[string]string{"KOGNIC_CREDENTIALS": "", "KOGNIC_CLIENT_ID": "env-id", "KOGNIC_CLIENT_SECRET": "env-secret"}, want: envClient},
		{name: "id only", env: map[string]string{"KOGNIC_CLIENT_ID": "env-id"}, wantErr: idOnly},
		{name: "id and empty secret", env: map[string]string{"KOGNIC_CLIENT_ID": "env-id", "KOGNIC_CLIENT_SECRET": ""}, wantErr: idOnly},
		{name: "secret only", env: map[string]string{"KOGNIC_CLIENT_SECRET": "env-secret"}, wantErr: secretOnly},
		{
			name: "bad file does not fall back", env: map[string]string{"KOGNIC_CREDENTIALS": "testdata/expired.json", "KOGNIC_CLIENT_ID": "env-id", "KOGNIC_CLIENT_SECRET": "env-secret"},
			wantErr: `credentials: KOGNIC_CREDENTIALS=testdata/expired.json: credentials expired at 2024-01-01T00:00:00Z (key "expires"); generate new credentials in the Kognic app`,
			wantIs:  creds.ErrExpired,
		},
		{
			name: "missing file", env: map[string]string{"KOGNIC_CREDENTIALS": "testdata/nope.json"},
			wantErr: `credentials: KOGNIC_CREDENTIALS=testdata/nope.json: cannot open file: no such file or directory`,
			wantIs:  os.ErrNotExist,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := creds.FromEnv(env(tt.env), creds.WithClock(func() time.Time { return now }))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error:\n got %v\nwant %s", err, tt.wantErr)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("errors.Is(err, %v) = false", tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tt.want.ID || !got.Secret.Equal(tt.want.Secret) || !slices.Equal(got.Scopes, tt.want.Scopes) || got.Source != tt.want.Source {
				t.Errorf("got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestLoadSecretFile(t *testing.T) {
	got, err := creds.LoadSecretFile("testdata/client.secret")
	if err != nil {
		t.Fatal(err)
	}
	if got.Reveal() != "FAKE-SECRET-do-not-use-0004" {
		t.Errorf("LoadSecretFile = %q", got.Reveal())
	}
	crlf := filepath.Join(t.TempDir(), "crlf.secret")
	if err := os.WriteFile(crlf, []byte("  s3cr3t-fake\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := creds.LoadSecretFile(crlf); err != nil || got.Reveal() != "s3cr3t-fake" {
		t.Errorf("LoadSecretFile(crlf) = %q, %v", got.Reveal(), err)
	}

	tests := []struct {
		path   string
		want   string
		wantIs error
	}{
		{"testdata/empty.secret", "credentials: testdata/empty.secret: secret file is empty; write the client secret into it", creds.ErrMalformed},
		{"testdata/twolines.secret", "credentials: testdata/twolines.secret: secret file has more than one line; it must hold only the client secret", creds.ErrMalformed},
		{"testdata/nope.secret", "credentials: testdata/nope.secret: cannot open file: no such file or directory", os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			_, err := creds.LoadSecretFile(tt.path)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error:\n got %v\nwant %s", err, tt.want)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(err, %v) = false", tt.wantIs)
			}
		})
	}
}

func TestClientRedacts(t *testing.T) {
	c := creds.Client{ID: "id", Secret: fakeSecret, Source: "test"}
	if got, want := c.String(), "client id from test"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := sprintfV(c), `creds.Client{ID:"id", Secret:[REDACTED], Scopes:[]string(nil), Source:"test"}`; got != want {
		t.Errorf("%%#v = %s, want %s", got, want)
	}
}
