package cli

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/clientlib"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// envOf is a getenv over key, value pairs.
func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// files are the inputs of the connection flags, written once per test.
type files struct {
	dir, ca, cert, key, apiKey, notPEM string
}

func writeFiles(t *testing.T) files {
	t.Helper()
	dir := t.TempDir()
	f := files{dir: dir, ca: filepath.Join(dir, "ca.pem"), apiKey: filepath.Join(dir, "api.key"), notPEM: filepath.Join(dir, "not.pem")}
	ca := testpki.NewCA(t, "broker-ca")
	testpki.WriteFile(t, f.ca, ca.CertPEM)
	f.cert, f.key = ca.Issue(t, testpki.Options{CommonName: "client"}).WriteFiles(t, dir, "client")
	testpki.WriteFile(t, f.apiKey, []byte("tbk_fake-api-key\n"))
	testpki.WriteFile(t, f.notPEM, []byte("not a certificate"))
	return f
}

// TestParseToken: every flag of `broker token` lands where it belongs,
// with TOKENBROKER_ADDR and TOKENBROKER_TENANT as the defaults of --addr
// and --tenant, in both spellings the flag package accepts.
func TestParseToken(t *testing.T) {
	f := writeFiles(t)
	for _, tc := range []struct {
		name     string
		env      []string
		args     []string
		want     tokenCmd // dialOpts aside
		dialOpts int
	}{
		{name: "defaults", want: tokenCmd{common: common{timeout: 30 * time.Second}}},
		{name: "broker from the environment", env: []string{"TOKENBROKER_ADDR", "broker:50051", "TOKENBROKER_TENANT", "acme"},
			want: tokenCmd{common: common{addr: "broker:50051", tenant: "acme", timeout: 30 * time.Second}}},
		{name: "flags override the environment", env: []string{"TOKENBROKER_ADDR", "broker:50051", "TOKENBROKER_TENANT", "acme"},
			args: []string{"--addr", "other:1", "--tenant", "team-a"},
			want: tokenCmd{common: common{addr: "other:1", tenant: "team-a", timeout: 30 * time.Second}}},
		{name: "broker flags", args: []string{"--addr", "127.0.0.1:1", "--tenant", "acme", "--scopes", "a,b c", "--min-valid", "2m", "--decode", "--timeout", "5s"},
			want: tokenCmd{common: common{addr: "127.0.0.1:1", tenant: "acme", scopes: scopeList{"a", "b", "c"}, timeout: 5 * time.Second}, minValid: 2 * time.Minute, decode: true}},
		{name: "single dash and =", args: []string{"-addr=b:1", "-min-valid=90s", "-decode"},
			want: tokenCmd{common: common{addr: "b:1", timeout: 30 * time.Second}, minValid: 90 * time.Second, decode: true}},
		{name: "kognic-auth's flags", args: []string{"--credentials", "~/creds.json", "--server", "https://auth.example.com", "--scopes", "api:read"},
			want: tokenCmd{common: common{scopes: scopeList{"api:read"}, timeout: 30 * time.Second,
				direct: directFlags{credentials: "~/creds.json", server: "https://auth.example.com"}}}},
		// argparse's nargs="+": the values up to the next flag.
		{name: "kognic-auth's --scopes a b", args: []string{"--scopes", "api:read", "api:write", "--decode", "--scopes", "x", "y"},
			want: tokenCmd{common: common{scopes: scopeList{"api:read", "api:write", "x", "y"}, timeout: 30 * time.Second}, decode: true}},
		{name: "--scope, -scopes= and a flag's value that looks like a flag", args: []string{"--scope", "a", "b", "-scopes=c", "--server", "--scopes"},
			want: tokenCmd{common: common{scopes: scopeList{"a", "b", "c"}, timeout: 30 * time.Second, direct: directFlags{server: "--scopes"}}}},
		{name: "named environment", args: []string{"--env", "example", "--env-config-file-path", "envs.json"},
			want: tokenCmd{common: common{timeout: 30 * time.Second, direct: directFlags{env: "example", envFile: "envs.json"}}}},
		{name: "--tls", args: []string{"--addr", "b:1", "--tls"}, dialOpts: 1,
			want: tokenCmd{common: common{addr: "b:1", timeout: 30 * time.Second, client: clientFlags{tls: true}}}},
		{name: "mutual TLS", args: []string{"--addr", "b:1", "--tls-ca", f.ca, "--tls-cert", f.cert, "--tls-key", f.key, "--tls-server-name", "broker"}, dialOpts: 1,
			want: tokenCmd{common: common{addr: "b:1", timeout: 30 * time.Second, client: clientFlags{ca: f.ca, cert: f.cert, key: f.key, serverName: "broker"}}}},
		{name: "API key to loopback", args: []string{"--addr", "127.0.0.1:1", "--api-key-file", f.apiKey}, dialOpts: 1,
			want: tokenCmd{common: common{addr: "127.0.0.1:1", timeout: 30 * time.Second, client: clientFlags{apiKeyFile: f.apiKey}}}},
		{name: "API key over TLS", args: []string{"--addr", "b:1", "--tls", "--api-key-file", f.apiKey}, dialOpts: 2,
			want: tokenCmd{common: common{addr: "b:1", timeout: 30 * time.Second, client: clientFlags{tls: true, apiKeyFile: f.apiKey}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			got, err := parseToken(tc.args, envOf(tc.env...), &stderr)
			if err != nil {
				t.Fatalf("parseToken: %v (stderr %q)", err, stderr.String())
			}
			if len(got.dialOpts) != tc.dialOpts {
				t.Errorf("%d dial options, want %d", len(got.dialOpts), tc.dialOpts)
			}
			got.dialOpts = nil
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("parsed\n%+v\nwant\n%+v", *got, tc.want)
			}
			if stderr.Len() > 0 {
				t.Errorf("stderr: %q", stderr.String())
			}
		})
	}
}

// TestTokenBadArguments: bad flags and combinations fail before any
// network call, with an error that names the flag and the fix; flag
// syntax errors print the usage instead.
func TestTokenBadArguments(t *testing.T) {
	f := writeFiles(t)
	twoKeys := filepath.Join(f.dir, "two.key")
	testpki.WriteFile(t, twoKeys, []byte("key-one key-two\n"))
	empty := filepath.Join(f.dir, "empty.key")
	testpki.WriteFile(t, empty, nil)
	fifo := filepath.Join(f.dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	broker := []string{"TOKENBROKER_ADDR", "broker:50051"}
	for _, tc := range []struct {
		name   string
		env    []string
		args   []string
		want   string // the error, or its start when it ends with "…"; "usage" for ErrUsage
		stderr string // in stderr
	}{
		{name: "unknown flag", args: []string{"--bogus"}, want: "usage", stderr: "flag provided but not defined: -bogus"},
		{name: "a flag of call", args: []string{"--format", "csv"}, want: "usage", stderr: "flag provided but not defined: -format"},
		{name: "bad duration", args: []string{"--timeout", "soon"}, want: "usage", stderr: `invalid value "soon" for flag -timeout`},
		{name: "bad boolean", args: []string{"--decode=maybe"}, want: "usage", stderr: `invalid boolean value "maybe" for -decode`},
		{name: "missing value", args: []string{"--addr"}, want: "usage", stderr: "flag needs an argument: -addr"},
		{name: "positional argument", args: []string{"acme"}, want: `token: unexpected argument "acme"`},
		{name: "--credentials with --addr", args: []string{"--addr", "b:1", "--credentials", "c.json"},
			want: "token: --credentials applies to direct mode, but --addr (or TOKENBROKER_ADDR) asks the broker; drop one of them"},
		{name: "--env with TOKENBROKER_ADDR", env: broker, args: []string{"--env", "example"},
			want: "token: --env applies to direct mode, but --addr (or TOKENBROKER_ADDR) asks the broker; drop one of them"},
		{name: "--env-config-file-path with --addr", args: []string{"--addr", "b:1", "--env-config-file-path", "e.json"},
			want: "token: --env-config-file-path applies to direct mode, but --addr (or TOKENBROKER_ADDR) asks the broker; drop one of them"},
		{name: "--server with --addr", args: []string{"--addr", "b:1", "--server", "https://auth.example.com"},
			want: "token: --server applies to direct mode, but --addr (or TOKENBROKER_ADDR) asks the broker; drop one of them"},
		{name: "--tls without --addr", args: []string{"--tls"},
			want: "token: the --tls* and --api-key-file flags are for a broker; give --addr, or drop them for direct mode"},
		{name: "--tls-ca without --addr", args: []string{"--tls-ca", f.ca},
			want: "token: the --tls* and --api-key-file flags are for a broker; give --addr, or drop them for direct mode"},
		{name: "--api-key-file without --addr", args: []string{"--api-key-file", f.apiKey},
			want: "token: the --tls* and --api-key-file flags are for a broker; give --addr, or drop them for direct mode"},
		{name: "--tls-cert without --tls-key", args: []string{"--addr", "b:1", "--tls-cert", f.cert},
			want: "token: --tls-cert and --tls-key go together: give both for mutual TLS, or neither"},
		{name: "--tls-key without --tls-cert", args: []string{"--addr", "b:1", "--tls-key", f.key},
			want: "token: --tls-cert and --tls-key go together: give both for mutual TLS, or neither"},
		{name: "--tls-ca missing", args: []string{"--addr", "b:1", "--tls-ca", filepath.Join(f.dir, "missing.pem")},
			want: "token: --tls-ca: open " + filepath.Join(f.dir, "missing.pem") + ": no such file or directory"},
		{name: "--tls-ca not PEM", args: []string{"--addr", "b:1", "--tls-ca", f.notPEM},
			want: "token: --tls-ca " + f.notPEM + ": no PEM certificates found"},
		{name: "--tls-cert not a key pair", args: []string{"--addr", "b:1", "--tls-cert", f.cert, "--tls-key", f.notPEM},
			want: "token: --tls-cert " + f.cert + " / --tls-key " + f.notPEM + ": …"},
		{name: "API key off loopback without TLS", args: []string{"--addr", "broker.example.com:50051", "--api-key-file", f.apiKey},
			want: "token: --api-key-file: broker.example.com:50051 is not a loopback address, and without TLS the key would cross the network in clear text; add --tls-ca (or --tls)"},
		{name: "API key file missing", args: []string{"--addr", "127.0.0.1:1", "--api-key-file", filepath.Join(f.dir, "nope")},
			want: "token: --api-key-file: open " + filepath.Join(f.dir, "nope") + ": no such file or directory"},
		{name: "API key file with two keys", args: []string{"--addr", "127.0.0.1:1", "--api-key-file", twoKeys},
			want: "token: --api-key-file " + twoKeys + ": must hold one API key on one line"},
		{name: "API key file empty", args: []string{"--addr", "127.0.0.1:1", "--api-key-file", empty},
			want: "token: --api-key-file " + empty + ": must hold one API key on one line"},
		// A FIFO is refused, never waited on (red team, issue 16: E).
		{name: "API key file a FIFO", args: []string{"--addr", "127.0.0.1:1", "--api-key-file", fifo},
			want: "token: --api-key-file: open " + fifo + ": is a named pipe (FIFO), not a regular file…"},
		{name: "--tls-ca a FIFO", args: []string{"--addr", "b:1", "--tls-ca", fifo},
			want: "token: --tls-ca: open " + fifo + ": is a named pipe (FIFO), not a regular file…"},
		{name: "--tls-key a FIFO", args: []string{"--addr", "b:1", "--tls-cert", f.cert, "--tls-key", fifo},
			want: "token: --tls-cert " + f.cert + " / --tls-key " + fifo + ": open " + fifo + ": is a named pipe (FIFO)…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := Token(t.Context(), tc.args, envOf(tc.env...), &stdout, &stderr)
			checkErr(t, err, tc.want)
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.stderr)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout: %q", stdout.String())
			}
		})
	}
}

// checkErr checks err against want: "usage" for ErrUsage, a prefix when
// want ends with "…", else the whole message.
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch prefix, isPrefix := strings.CutSuffix(want, "…"); {
	case want == "usage":
		if !errors.Is(err, ErrUsage) {
			t.Fatalf("error %v, want ErrUsage", err)
		}
	case err == nil:
		t.Fatalf("no error, want %q", want)
	case isPrefix && !strings.HasPrefix(err.Error(), prefix), !isPrefix && err.Error() != want:
		t.Fatalf("error\n%v\nwant\n%s", err, want)
	}
}

// TestHelp: -h prints the usage and every flag, and is no error.
func TestHelp(t *testing.T) {
	for name, run := range map[string]func(args []string, stderr *strings.Builder) error{
		"token": func(args []string, stderr *strings.Builder) error {
			return Token(t.Context(), args, envOf(), &strings.Builder{}, stderr)
		},
		"call": func(args []string, stderr *strings.Builder) error {
			return Call(t.Context(), args, envOf(), &strings.Builder{}, stderr)
		},
	} {
		var stderr strings.Builder
		if err := run([]string{"-h"}, &stderr); err != nil {
			t.Errorf("%s -h: %v", name, err)
		}
		for _, flag := range []string{"-addr", "-tenant", "-scopes", "-timeout", "-credentials", "-env", "-env-config-file-path",
			"-tls", "-tls-ca", "-tls-cert", "-tls-key", "-tls-server-name", "-api-key-file"} {
			if !strings.Contains(stderr.String(), "  "+flag+" ") && !strings.Contains(stderr.String(), "  "+flag+"\n") {
				t.Errorf("%s -h does not list %s", name, flag)
			}
		}
		if !strings.Contains(stderr.String(), "Usage: broker "+name) {
			t.Errorf("%s -h: no usage line in %q", name, stderr.String())
		}
	}
}

// TestTokenAPIKeyFileMode: an API key file others may read is used, with
// a warning.
func TestTokenAPIKeyFileMode(t *testing.T) {
	f := writeFiles(t)
	if err := os.Chmod(f.apiKey, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd, err := parseToken([]string{"--addr", "127.0.0.1:1", "--api-key-file", f.apiKey}, envOf(), &stderr)
	if err != nil || len(cmd.dialOpts) != 1 {
		t.Fatalf("parseToken = %v; want the key used", err)
	}
	if !strings.HasPrefix(stderr.String(), "warning: ") || !strings.Contains(stderr.String(), f.apiKey) {
		t.Errorf("stderr %q, want a warning naming the file", stderr.String())
	}
	if strings.Contains(stderr.String(), "tbk_fake-api-key") {
		t.Error("the warning shows the key")
	}
}

// TestTokenFlagsReachClientlib: in direct mode each flag becomes its
// clientlib option, whose own check answers before any network call.
func TestTokenFlagsReachClientlib(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "environments.json")
	testpki.WriteFile(t, envFile, []byte(`{"environments": {"example": {"host": "example.kognic.com", "auth_server": "https://auth.example.kognic.com"},
		"named": {"host": "named.example", "auth_server": "https://auth.named.example", "credentials": "/named.json"}}}`))
	creds := []string{"KOGNIC_CLIENT_ID", "fake-id", "KOGNIC_CLIENT_SECRET", "FAKE-SECRET"}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
		is   error
	}{
		{name: "no credentials", want: "token: clientlib: no token source configured: …", is: clientlib.ErrNotConfigured},
		{name: "--credentials", args: []string{"--credentials", filepath.Join(dir, "missing.json")}, want: "token: clientlib: WithCredentialsFile: …"},
		{name: "--env", args: []string{"--env", "prod", "--env-config-file-path", envFile}, want: "token: clientlib: WithEnvironment: …"},
		{name: "--env with --credentials: the file's credentials", args: []string{"--env", "example", "--env-config-file-path", envFile, "--credentials", filepath.Join(dir, "missing.json")},
			want: "token: clientlib: WithCredentialsFile: …"},
		{name: "--env with credentials and --credentials", args: []string{"--env", "named", "--env-config-file-path", envFile, "--credentials", "c.json"},
			want: `token: clientlib: WithCredentialsFile (c.json) and environment "named" of ` + envFile + ` (credentials /named.json) both name credentials; drop one of them (--credentials or --env in broker token and broker call), or remove the environment's credentials key`},
		{name: "--env-config-file-path", args: []string{"--env", "example", "--env-config-file-path", filepath.Join(dir, "nope.json")},
			want: "token: clientlib: environments file: …"},
		{name: "--server", env: creds, args: []string{"--server", "http://auth.example.com"}, want: "token: clientlib: refusing to send credentials without TLS: …",
			is: clientlib.ErrInsecureTransport},
		{name: "--scopes", env: creds, args: []string{"--scopes", `api:"read"`}, want: "token: clientlib: WithScopes: …", is: clientlib.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Token(t.Context(), tc.args, envOf(tc.env...), &strings.Builder{}, &strings.Builder{})
			checkErr(t, err, tc.want)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			if strings.Contains(err.Error(), "FAKE-SECRET") {
				t.Error("the error shows the client secret")
			}
		})
	}
}

// TestPrintJWT: --decode prints a JWT's header and payload, never its
// signature, and refuses what is not a JWT.
func TestPrintJWT(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	header, payload := b64([]byte(`{"alg":"RS256"}`)), b64([]byte(`{"sub":"acme","exp":1}`))
	for _, tc := range []struct {
		name, token, want, err string
	}{
		{name: "JWT", token: header + "." + payload + ".c2lnbmF0dXJl",
			want: "{\n  \"header\": {\n    \"alg\": \"RS256\"\n  },\n  \"payload\": {\n    \"sub\": \"acme\",\n    \"exp\": 1\n  }\n}\n"},
		{name: "padded", token: header + "==." + payload + ".sig",
			want: "{\n  \"header\": {\n    \"alg\": \"RS256\"\n  },\n  \"payload\": {\n    \"sub\": \"acme\",\n    \"exp\": 1\n  }\n}\n"},
		{name: "opaque token", token: "opaque-token", err: "token: --decode: the access token is not a JWT (it does not have three dot-separated parts)"},
		{name: "header not base64", token: "!!." + payload + ".sig", err: "token: --decode: JWT part 1 is not base64url-encoded JSON"},
		{name: "payload not JSON", token: header + "." + b64([]byte("plain")) + ".sig", err: "token: --decode: JWT part 2 is not base64url-encoded JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			err := printJWT(&out, tc.token)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err || out.Len() > 0 {
					t.Fatalf("printJWT = %v, printed %q; want error %q", err, out.String(), tc.err)
				}
				return
			}
			if err != nil || out.String() != tc.want {
				t.Fatalf("printJWT = %v, printed\n%s\nwant\n%s", err, out.String(), tc.want)
			}
			if strings.Contains(out.String(), "c2lnbmF0dXJl") || strings.Contains(out.String(), "signature") {
				t.Error("the signature was printed")
			}
		})
	}
}
