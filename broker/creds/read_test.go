//go:build unix

package creds_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// loadSecret runs LoadSecretFile and fails the test if it does not return
// within seconds: a FIFO or device must never block the read.
func loadSecret(t *testing.T, path string) (creds.Secret, error) {
	t.Helper()
	type result struct {
		s   creds.Secret
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := creds.LoadSecretFile(path)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		return r.s, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("LoadSecretFile(%s) blocked", path)
		return "", nil
	}
}

// TestLoadSecretFileRefusesWhatIsNotASecret: a FIFO, a device or a
// directory at a secret file's path is an error naming the path and its
// type, returned at once; a file holding a NUL or another control
// character, or bytes that are not UTF-8 (Latin-1), is refused naming the
// file, without quoting it. /proc/self/environ does not load as a secret.
func TestLoadSecretFileRefusesWhatIsNotASecret(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.secret")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	linkToFIFO := filepath.Join(dir, "link.secret")
	if err := os.Symlink(fifo, linkToFIFO); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const secretPart = "FAKE-part-of-the-secret"
	for _, tc := range []struct {
		name, path string
		want       string // in the error, after the path
		wantIs     error
	}{
		{"FIFO", fifo, "cannot open file: is a named pipe (FIFO), not a regular file; point it at the file itself", creds.ErrNotRegular},
		{"symlink to a FIFO", linkToFIFO, "cannot open file: is a named pipe (FIFO), not a regular file", creds.ErrNotRegular},
		{"character device", "/dev/null", "cannot open file: is a character device, not a regular file", creds.ErrNotRegular},
		{"endless device", "/dev/zero", "cannot open file: is a character device, not a regular file", creds.ErrNotRegular},
		{"directory", dir, "cannot open file: is a directory, not a regular file", creds.ErrNotRegular},
		{"NUL", write("nul.secret", secretPart+"\x00"+secretPart+"\n"), "secret file holds a NUL or another control character; it must hold only the client secret, as text", creds.ErrMalformed},
		{"escape", write("esc.secret", secretPart+"\x1b[31m"), "secret file holds a NUL or another control character", creds.ErrMalformed},
		{"C1 control", write("c1.secret", secretPart+"\u0085x"), "secret file holds a NUL or another control character", creds.ErrMalformed},
		{"Latin-1", write("latin1.secret", secretPart+"\xe9t\xe9\n"), "secret file is not valid UTF-8 text (e.g. a Latin-1 byte); it must hold only the client secret, as text", creds.ErrMalformed},
		{"too large", write("huge.secret", secretPart+strings.Repeat("x", creds.MaxFileSize)), "file is larger than 1048576 bytes; point to the credentials file itself", creds.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := loadSecret(t, tc.path)
			if err == nil {
				t.Fatalf("loaded a secret of %d bytes, want an error", len(s.Reveal()))
			}
			if !strings.HasPrefix(err.Error(), "credentials: "+tc.path+": "+tc.want) {
				t.Errorf("error:\n got %v\nwant credentials: %s: %s…", err, tc.path, tc.want)
			}
			if !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(err, %v) = false", tc.wantIs)
			}
			if strings.Contains(err.Error(), secretPart) {
				t.Error("the error quotes the file")
			}
		})
	}

	t.Run("/proc/self/environ", func(t *testing.T) {
		if _, err := os.Stat("/proc/self/environ"); err != nil {
			t.Skip("no /proc")
		}
		s, err := loadSecret(t, "/proc/self/environ")
		if err == nil || !errors.Is(err, creds.ErrMalformed) {
			t.Fatalf("loaded %d bytes of the environment as a secret (err %v)", len(s.Reveal()), err)
		}
		if strings.Contains(err.Error(), "PATH=") {
			t.Error("the error quotes the environment")
		}
	})

	t.Run("UTF-8 text is a secret", func(t *testing.T) {
		p := write("utf8.secret", "sécret-ü-€\n")
		if s, err := loadSecret(t, p); err != nil || s.Reveal() != "sécret-ü-€" {
			t.Errorf("LoadSecretFile = %q, %v", s.Reveal(), err)
		}
	})
}

// TestCredentialsSecretMustBeText: the clientSecret of a credentials
// file and KOGNIC_CLIENT_SECRET obey the same rule as a secret file.
func TestCredentialsSecretMustBeText(t *testing.T) {
	_, err := creds.ParseFile([]byte(`{"clientId":"id","clientSecret":"FAKE\u0000x","email":"e@x","userId":1,"issuer":"i"}`), "c.json")
	if want := `credentials: c.json: key "clientSecret" holds a NUL or another control character; it must be the client secret as text`; err == nil || err.Error() != want {
		t.Errorf("ParseFile:\n got %v\nwant %s", err, want)
	}
	_, err = creds.ParseFile([]byte("{\"clientId\":\"id\",\"clientSecret\":\"FAKE\xe9\",\"email\":\"e@x\",\"userId\":1,\"issuer\":\"i\"}"), "c.json")
	if !errors.Is(err, creds.ErrMalformed) || !strings.Contains(err.Error(), "not valid UTF-8") {
		t.Errorf("ParseFile(Latin-1) = %v, want a malformed-file error", err)
	}
	env := map[string]string{creds.EnvClientID: "id", creds.EnvClientSecret: "FAKE\x1bx"}
	_, err = creds.FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if want := "credentials: KOGNIC_CLIENT_SECRET holds a NUL or another control character; set it to the client secret"; err == nil || err.Error() != want {
		t.Errorf("FromEnv:\n got %v\nwant %s", err, want)
	}
}

// TestReadFile: only regular files, at most limit bytes.
func TestReadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := creds.ReadFile(p, 5); err != nil || string(b) != "12345" {
		t.Errorf("ReadFile(limit 5) = %q, %v", b, err)
	}
	if _, err := creds.ReadFile(p, 4); err == nil || err.Error() != "read "+p+": file is larger than 4 bytes" {
		t.Errorf("ReadFile(limit 4) = %v", err)
	}
	if _, err := creds.ReadFile("/dev/zero", 4); !errors.Is(err, creds.ErrNotRegular) || err.Error() != "open /dev/zero: is a character device, not a regular file; point it at the file itself" {
		t.Errorf("ReadFile(/dev/zero) = %v", err)
	}
}
