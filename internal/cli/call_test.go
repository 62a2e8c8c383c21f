package cli

import (
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/clientlib"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// TestParseCall: the request, format and connection of `broker call`
// from its arguments, with flags before, between and after METHOD and URL
// as kog takes them, and kog's and curl's -d/--data and -H/--header.
func TestParseCall(t *testing.T) {
	f := writeFiles(t)
	bodyFile := filepath.Join(f.dir, "body.json")
	testpki.WriteFile(t, bodyFile, []byte(`{"name": "from a file"}`))
	const api = "https://app.kognic.com/v1/projects"
	dflt := common{timeout: 60 * time.Second}
	type want struct {
		method, url, body string
		header            http.Header
		format            string
		common            common // dialOpts aside
		dialOpts          int
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want want
	}{
		{name: "GET", args: []string{"get", api},
			want: want{method: "GET", url: api, header: http.Header{}, format: "json", common: dflt}},
		{name: "each method, any case", args: []string{"PaTcH", api},
			want: want{method: "PATCH", url: api, header: http.Header{}, format: "json", common: dflt}},
		{name: "flags anywhere", args: []string{"--format", "csv", "delete", "--scopes", "a,b", api, "--timeout", "5s"},
			want: want{method: "DELETE", url: api, header: http.Header{}, format: "csv", common: common{scopes: scopeList{"a", "b"}, timeout: 5 * time.Second}}},
		{name: "--scope, repeated, and --scopes with spaces", args: []string{"get", api, "--scope", "a", "--scopes", "b c", "--scope=d,e"},
			want: want{method: "GET", url: api, header: http.Header{}, format: "json", common: common{scopes: scopeList{"a", "b", "c", "d", "e"}, timeout: 60 * time.Second}}},
		{name: "-d JSON", args: []string{"post", api, "-d", `{"a": 1}`},
			want: want{method: "POST", url: api, body: `{"a": 1}`, header: http.Header{"Content-Type": {"application/json"}}, format: "json", common: dflt}},
		{name: "--data text", args: []string{"put", api, "--data", "plain text"},
			want: want{method: "PUT", url: api, body: "plain text", header: http.Header{}, format: "json", common: dflt}},
		{name: "-d @FILE", args: []string{"post", api, "-d", "@" + bodyFile},
			want: want{method: "POST", url: api, body: `{"name": "from a file"}`, header: http.Header{"Content-Type": {"application/json"}}, format: "json", common: dflt}},
		{name: "-H and --header, repeated", args: []string{"get", api, "-H", "X-A: 1", "--header", "X-B:2", "-H", "x-a:  3 "},
			want: want{method: "GET", url: api, header: http.Header{"X-A": {"1", "3"}, "X-B": {"2"}}, format: "json", common: dflt}},
		{name: "a Content-Type given is kept", args: []string{"post", api, "-d", "{}", "-H", "Content-Type: text/plain"},
			want: want{method: "POST", url: api, body: "{}", header: http.Header{"Content-Type": {"text/plain"}}, format: "json", common: dflt}},
		{name: "broker", args: []string{"get", api, "--addr", "b:1", "--tenant", "acme", "--scopes", "api:read"},
			want: want{method: "GET", url: api, header: http.Header{}, format: "json", common: common{addr: "b:1", tenant: "acme", scopes: scopeList{"api:read"}, timeout: 60 * time.Second}}},
		{name: "broker from the environment", env: []string{"TOKENBROKER_ADDR", "b:1", "TOKENBROKER_TENANT", "acme"}, args: []string{"head", api},
			want: want{method: "HEAD", url: api, header: http.Header{}, format: "json", common: common{addr: "b:1", tenant: "acme", timeout: 60 * time.Second}}},
		{name: "broker over mutual TLS with an API key", args: []string{"options", api, "--addr", "b:1", "--tls-ca", f.ca, "--tls-cert", f.cert, "--tls-key", f.key, "--tls-server-name", "broker", "--api-key-file", f.apiKey},
			want: want{method: "OPTIONS", url: api, header: http.Header{}, format: "json", dialOpts: 2,
				common: common{addr: "b:1", timeout: 60 * time.Second, client: clientFlags{ca: f.ca, cert: f.cert, key: f.key, serverName: "broker", apiKeyFile: f.apiKey}}}},
		{name: "kognic-auth's flags", args: []string{"get", api, "--env", "example", "--env-config-file-path", "envs.json", "--format", "table"},
			want: want{method: "GET", url: api, header: http.Header{}, format: "table", common: common{timeout: 60 * time.Second, direct: directFlags{env: "example", envFile: "envs.json"}}}},
		{name: "credentials file", args: []string{"get", api, "--credentials", "creds.json", "--format", "jsonl"},
			want: want{method: "GET", url: api, header: http.Header{}, format: "jsonl", common: common{timeout: 60 * time.Second, direct: directFlags{credentials: "creds.json"}}}},
		{name: "tsv", args: []string{"get", api, "--format", "tsv"},
			want: want{method: "GET", url: api, header: http.Header{}, format: "tsv", common: dflt}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			cmd, err := parseCall(tc.args, envOf(tc.env...), &stderr)
			if err != nil {
				t.Fatalf("parseCall: %v (stderr %q)", err, stderr.String())
			}
			body, _ := io.ReadAll(cmd.req.Body)
			got := want{method: cmd.req.Method, url: cmd.req.URL.String(), body: string(body), header: cmd.req.Header,
				format: cmd.format, common: cmd.common, dialOpts: len(cmd.dialOpts)}
			got.common.dialOpts = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parsed\n%+v\nwant\n%+v", got, tc.want)
			}
			if int64(len(body)) != cmd.req.ContentLength || (len(body) > 0) != (cmd.req.GetBody != nil) {
				t.Errorf("ContentLength %d, GetBody set %v, for a %d-byte body: the body cannot be sent or replayed",
					cmd.req.ContentLength, cmd.req.GetBody != nil, len(body))
			}
		})
	}
}

// TestCallBadArguments: bad arguments and flag combinations fail before
// any network call, naming what is wrong.
func TestCallBadArguments(t *testing.T) {
	f := writeFiles(t)
	const api = "https://app.kognic.com/v1/projects"
	for _, tc := range []struct {
		name   string
		env    []string
		args   []string
		want   string // as for checkErr
		stderr string
	}{
		{name: "no arguments", want: "usage", stderr: "call: want METHOD and URL, got 0 arguments\nUsage: broker call METHOD URL"},
		{name: "URL missing", args: []string{"get"}, want: "usage", stderr: "call: want METHOD and URL, got 1 arguments"},
		{name: "three arguments", args: []string{"get", api, "extra"}, want: "usage", stderr: "call: want METHOD and URL, got 3 arguments\nUsage"},
		{name: "--scopes a b", args: []string{"get", api, "--scopes", "a", "b"}, want: "usage",
			stderr: "call: want METHOD and URL, got 3 arguments (here --scopes takes one argument: --scopes a,b or --scopes 'a b', or repeat --scope)\nUsage"},
		{name: "a flag of token", args: []string{"get", api, "--server", "https://auth.example.com"}, want: "usage", stderr: "flag provided but not defined: -server"},
		{name: "--decode", args: []string{"get", api, "--decode"}, want: "usage", stderr: "flag provided but not defined: -decode"},
		{name: "bad method", args: []string{"fetch", api}, want: `call: method "fetch": want get, post, put, patch, delete, head or options`},
		{name: "relative URL", args: []string{"get", "/v1/projects"}, want: `call: URL "/v1/projects": want an absolute http(s) URL, e.g. https://app.kognic.com/v1/projects`},
		{name: "ftp URL", args: []string{"get", "ftp://app.kognic.com/x"}, want: `call: URL "ftp://app.kognic.com/x": want an absolute http(s) URL, e.g. https://app.kognic.com/v1/projects`},
		{name: "URL without host", args: []string{"get", "https:///x"}, want: `call: URL "https:///x": want an absolute http(s) URL, e.g. https://app.kognic.com/v1/projects`},
		{name: "unparsable URL", args: []string{"get", "https://[::1"}, want: `call: URL "https://[::1": want an absolute http(s) URL, e.g. https://app.kognic.com/v1/projects`},
		{name: "header without colon", args: []string{"get", api, "-H", "X-A 1"}, want: `call: header "X-A 1": want 'Key: Value'`},
		{name: "header without key", args: []string{"get", api, "-H", ": 1"}, want: `call: header ": 1": want 'Key: Value'`},
		{name: "-d @FILE missing", args: []string{"post", api, "-d", "@" + filepath.Join(f.dir, "nope")},
			want: "call: -d @" + filepath.Join(f.dir, "nope") + ": open " + filepath.Join(f.dir, "nope") + ": no such file or directory"},
		{name: "bad format", args: []string{"get", api, "--format", "xml"}, want: `call: --format "xml": want json, jsonl, csv, tsv or table`},
		{name: "--credentials with --addr", args: []string{"get", api, "--addr", "b:1", "--credentials", "c.json"},
			want: "call: --credentials applies to direct mode, but --addr (or TOKENBROKER_ADDR) asks the broker; drop one of them"},
		{name: "--env with TOKENBROKER_ADDR", env: []string{"TOKENBROKER_ADDR", "b:1"}, args: []string{"get", api, "--env", "example"},
			want: "call: --env applies to direct mode, but --addr (or TOKENBROKER_ADDR) asks the broker; drop one of them"},
		{name: "--tls-server-name without --addr", args: []string{"get", api, "--tls-server-name", "broker"},
			want: "call: the --tls* and --api-key-file flags are for a broker; give --addr, or drop them for direct mode"},
		{name: "API key off loopback without TLS", args: []string{"get", api, "--addr", "broker.example.com:443", "--api-key-file", f.apiKey},
			want: "call: --api-key-file: broker.example.com:443 is not a loopback address, and without TLS the key would cross the network in clear text; add --tls-ca (or --tls)"},
		{name: "--tls-cert without --tls-key", args: []string{"get", api, "--addr", "b:1", "--tls-cert", f.cert},
			want: "call: --tls-cert and --tls-key go together: give both for mutual TLS, or neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := Call(t.Context(), tc.args, envOf(tc.env...), &stdout, &stderr)
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

// TestCallFlagsReachClientlib: each flag becomes its clientlib option,
// whose own check answers before any network call; without --env,
// --credentials or --addr the URL's host picks the environment.
func TestCallFlagsReachClientlib(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "environments.json")
	testpki.WriteFile(t, envFile, []byte(`{"environments": {"example": {"host": "example.kognic.com", "auth_server": "https://auth.example.kognic.com"}}}`))
	for _, tc := range []struct {
		name string
		args []string
		want string
		is   error
	}{
		{name: "--tenant", args: []string{"get", "https://x.example.com/", "--addr", "127.0.0.1:1", "--tenant", "Not_A_Name"},
			want: "call: clientlib: WithBroker: tenant name …", is: clientlib.ErrInvalidArgument},
		{name: "--scopes", args: []string{"get", "https://x.example.com/", "--addr", "127.0.0.1:1", "--scopes", `a"b`},
			want: "call: clientlib: WithScopes: …", is: clientlib.ErrInvalidArgument},
		{name: "--credentials", args: []string{"get", "https://x.example.com/", "--credentials", filepath.Join(dir, "missing.json")},
			want: "call: clientlib: WithCredentialsFile: …"},
		{name: "--env", args: []string{"get", "https://x.example.com/", "--env", "prod", "--env-config-file-path", envFile},
			want: "call: clientlib: WithEnvironment: …"},
		{name: "by host", args: []string{"get", "https://elsewhere.example.com/v1/x?secret=1", "--env-config-file-path", envFile},
			want: `call: GET https://elsewhere.example.com/v1/x: clientlib: no environment for host "elsewhere.example.com", …`, is: clientlib.ErrUnknownHost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout strings.Builder
			err := Call(t.Context(), tc.args, envOf(), &stdout, &strings.Builder{})
			checkErr(t, err, tc.want)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			if strings.Contains(err.Error(), "secret=1") || stdout.Len() > 0 {
				t.Errorf("error %v, stdout %q: the query was shown or something printed", err, stdout.String())
			}
		})
	}
}
