package clientlib

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	kognicenv "github.com/tokenbroker/tokenbroker/broker/kognic"
	"github.com/tokenbroker/tokenbroker/broker/names"
)

// TestResolve is the precedence table of NewHTTPClient: options over
// TOKENBROKER_* over KOGNIC_*, with every error message.
func TestResolve(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const (
		file       = "testdata/credentials.json"
		fileClient = "fake-clientlib-client"
		kognic     = "https://auth.app.kognic.com/v1/auth/oauth/token"
		envs       = "testdata/kognic/environments.json"
	)
	xdg, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	// Errors from the broker's own parsing are wrapped; their text is
	// theirs and tested there.
	credsErr := func(lookup map[string]string) string {
		_, err := creds.FromEnv(mapLookup(lookup), creds.WithClock(func() time.Time { return now }))
		return err.Error()
	}
	configErr := func(lookup map[string]string) string {
		_, err := kognicenv.FromEnv(mapLookup(lookup), kognicenv.Options{Now: now})
		return err.Error()
	}
	fileErr := func(path string) string {
		_, err := creds.LoadFile(path, creds.WithClock(func() time.Time { return now }))
		return err.Error()
	}
	idEnv := map[string]string{"KOGNIC_CLIENT_ID": "env-id", "KOGNIC_CLIENT_SECRET": "env-secret"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	type want struct {
		mode               mode
		from               string
		addr, tenant       string
		tokenURL, clientID string
		scopes             []string
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		opts    []Option
		want    want
		wantErr string
	}{
		// Nothing configured.
		{name: "empty", wantErr: ErrNotConfigured.Error()},
		{name: "blank values are unset", env: map[string]string{"TOKENBROKER_ADDR": " ", "KOGNIC_CLIENT_ID": ""},
			wantErr: ErrNotConfigured.Error()},

		// Broker mode from the environment.
		{name: "TOKENBROKER_ADDR", env: map[string]string{"TOKENBROKER_ADDR": "broker:50051"},
			want: want{mode: modeBroker, from: "TOKENBROKER_ADDR", addr: "broker:50051", tenant: "default"}},
		{name: "TOKENBROKER_TENANT", env: map[string]string{"TOKENBROKER_ADDR": "broker:50051", "TOKENBROKER_TENANT": "acme"},
			want: want{mode: modeBroker, from: "TOKENBROKER_ADDR and TOKENBROKER_TENANT", addr: "broker:50051", tenant: "acme"}},
		{name: "broker wins over Kognic credentials", env: with(idEnv, "TOKENBROKER_ADDR", "broker:50051", "KOGNIC_CREDENTIALS", file),
			want: want{mode: modeBroker, from: "TOKENBROKER_ADDR", addr: "broker:50051", tenant: "default"}},
		{name: "tenant without address", env: with(idEnv, "TOKENBROKER_TENANT", "acme"),
			wantErr: "clientlib: TOKENBROKER_TENANT is set but TOKENBROKER_ADDR is not; set TOKENBROKER_ADDR to the broker's address, or unset TOKENBROKER_TENANT"},
		{name: "bad tenant", env: map[string]string{"TOKENBROKER_ADDR": "b:1", "TOKENBROKER_TENANT": "Acme"},
			wantErr: "clientlib: TOKENBROKER_ADDR and TOKENBROKER_TENANT: " + tenantErr("Acme")},
		{name: "scopes in broker mode", env: map[string]string{"TOKENBROKER_ADDR": "b:1"}, opts: []Option{WithScopes("b", "a", "b")},
			want: want{mode: modeBroker, from: "TOKENBROKER_ADDR", addr: "b:1", tenant: "default"}},
		{name: "bad scopes in broker mode", env: map[string]string{"TOKENBROKER_ADDR": "b:1"}, opts: []Option{WithScopes("a b")},
			wantErr: "clientlib: WithScopes: " + scopesErr("a b")},
		{name: "auth server in broker mode", env: map[string]string{"TOKENBROKER_ADDR": "b:1"}, opts: []Option{WithAuthServer("https://auth.example")},
			wantErr: "clientlib: WithAuthServer applies to direct mode only, but TOKENBROKER_ADDR selects broker mode, where the broker holds the tenant's token URL"},

		// Direct mode from the environment.
		{name: "KOGNIC_CLIENT_ID and SECRET", env: idEnv,
			want: want{mode: modeDirect, from: "KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET", tokenURL: kognic, clientID: "env-id"}},
		{name: "KOGNIC_CREDENTIALS", env: map[string]string{"KOGNIC_CREDENTIALS": file},
			want: want{mode: modeDirect, from: "credentials file " + file, tokenURL: kognic, clientID: fileClient, scopes: []string{"read:inputs"}}},
		{name: "KOGNIC_CREDENTIALS wins over ID and secret", env: with(idEnv, "KOGNIC_CREDENTIALS", file),
			want: want{mode: modeDirect, from: "credentials file " + file, tokenURL: kognic, clientID: fileClient, scopes: []string{"read:inputs"}}},
		{name: "KOGNIC_AUTH_SERVER", env: with(idEnv, "KOGNIC_AUTH_SERVER", "https://auth.example/"),
			want: want{mode: modeDirect, from: "KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET", tokenURL: "https://auth.example/v1/auth/oauth/token", clientID: "env-id"}},
		{name: "WithScopes replaces the file's scopes", env: map[string]string{"KOGNIC_CREDENTIALS": file}, opts: []Option{WithScopes("w", "r")},
			want: want{mode: modeDirect, from: "credentials file " + file, tokenURL: kognic, clientID: fileClient, scopes: []string{"r", "w"}}},
		{name: "ID without secret", env: map[string]string{"KOGNIC_CLIENT_ID": "x"},
			wantErr: "clientlib: direct mode: " + credsErr(map[string]string{"KOGNIC_CLIENT_ID": "x"})},
		{name: "secret without ID", env: map[string]string{"KOGNIC_CLIENT_SECRET": "x"},
			wantErr: "clientlib: direct mode: " + credsErr(map[string]string{"KOGNIC_CLIENT_SECRET": "x"})},
		{name: "missing credentials file", env: map[string]string{"KOGNIC_CREDENTIALS": "testdata/nope.json"},
			wantErr: "clientlib: direct mode: " + credsErr(map[string]string{"KOGNIC_CREDENTIALS": "testdata/nope.json"})},
		{name: "expired credentials file", env: map[string]string{"KOGNIC_CREDENTIALS": "testdata/expired.json"},
			wantErr: "clientlib: direct mode: " + credsErr(map[string]string{"KOGNIC_CREDENTIALS": "testdata/expired.json"})},
		{name: "bad KOGNIC_AUTH_SERVER", env: with(idEnv, "KOGNIC_AUTH_SERVER", "auth.example"),
			wantErr: "clientlib: direct mode: " + configErr(with(idEnv, "KOGNIC_AUTH_SERVER", "auth.example"))},
		{name: "plain http KOGNIC_AUTH_SERVER", env: with(idEnv, "KOGNIC_AUTH_SERVER", "http://auth.example"),
			wantErr: "clientlib: refusing to send credentials without TLS: the auth server http://auth.example (KOGNIC_AUTH_SERVER) is plain http and would receive the client secret unencrypted; use https (plain http is accepted only for loopback)"},
		{name: "WithInsecureHTTP is not for the auth server", env: with(idEnv, "KOGNIC_AUTH_SERVER", "http://auth.example"), opts: []Option{WithInsecureHTTP()},
			wantErr: "clientlib: refusing to send credentials without TLS: the auth server http://auth.example (KOGNIC_AUTH_SERVER) is plain http and would receive the client secret unencrypted; use https (plain http is accepted only for loopback)"},
		{name: "plain http loopback", env: with(idEnv, "KOGNIC_AUTH_SERVER", "http://127.0.0.1:8080"),
			want: want{mode: modeDirect, from: "KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET", tokenURL: "http://127.0.0.1:8080/v1/auth/oauth/token", clientID: "env-id"}},
		{name: "bad scopes in direct mode", env: idEnv, opts: []Option{WithScopes("")},
			wantErr: "clientlib: WithScopes: " + scopesErr("")},

		// Options win over the environment.
		{name: "WithBroker over everything", env: with(idEnv, "TOKENBROKER_ADDR", "env:1", "TOKENBROKER_TENANT", "env-tenant"),
			opts: []Option{WithBroker("opt:2", "acme")},
			want: want{mode: modeBroker, from: "WithBroker", addr: "opt:2", tenant: "acme"}},
		{name: "WithBroker default tenant", env: map[string]string{"TOKENBROKER_TENANT": "env-tenant"},
			opts: []Option{WithBroker("opt:2", "")},
			want: want{mode: modeBroker, from: "WithBroker", addr: "opt:2", tenant: "default"}},
		{name: "WithBroker empty address", opts: []Option{WithBroker(" ", "acme")},
			wantErr: "clientlib: WithBroker: the broker address is empty; pass host:port"},
		{name: "WithBroker bad tenant", opts: []Option{WithBroker("b:1", "-x")},
			wantErr: "clientlib: WithBroker: " + tenantErr("-x")},
		{name: "WithClientCredentials over TOKENBROKER_ADDR and file", env: map[string]string{"TOKENBROKER_ADDR": "env:1", "KOGNIC_CREDENTIALS": file},
			opts: []Option{WithClientCredentials("opt-id", "opt-secret")},
			want: want{mode: modeDirect, from: "WithClientCredentials", tokenURL: kognic, clientID: "opt-id"}},
		{name: "WithClientCredentials empty", opts: []Option{WithClientCredentials("id", "")},
			wantErr: "clientlib: WithClientCredentials: the client ID and the client secret must both be non-empty"},
		{name: "WithCredentialsFile over env", env: with(idEnv, "KOGNIC_CREDENTIALS", "testdata/expired.json"),
			opts: []Option{WithCredentialsFile(file)},
			want: want{mode: modeDirect, from: "WithCredentialsFile", tokenURL: kognic, clientID: fileClient, scopes: []string{"read:inputs"}}},
		{name: "WithCredentialsFile missing", opts: []Option{WithCredentialsFile("testdata/nope.json")},
			wantErr: "clientlib: WithCredentialsFile: " + fileErr("testdata/nope.json")},
		{name: "WithCredentialsFile expired", opts: []Option{WithCredentialsFile("testdata/expired.json")},
			wantErr: "clientlib: WithCredentialsFile: " + fileErr("testdata/expired.json")},
		{name: "WithAuthServer over KOGNIC_AUTH_SERVER", env: with(idEnv, "KOGNIC_AUTH_SERVER", "https://env.example"),
			opts: []Option{WithAuthServer("https://opt.example")},
			want: want{mode: modeDirect, from: "KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET", tokenURL: "https://opt.example/v1/auth/oauth/token", clientID: "env-id"}},
		{name: "WithAuthServer not a URL", env: idEnv, opts: []Option{WithAuthServer("ftp://x")},
			wantErr: `clientlib: WithAuthServer: "ftp://x" is not an absolute http(s) URL; e.g. https://auth.app.kognic.com`},
		{name: "WithAuthServer with password", env: idEnv, opts: []Option{WithAuthServer("https://u:p@auth.example")},
			wantErr: "clientlib: WithAuthServer: must not contain a user or password (put credentials in credentials_file or client_secret_file); e.g. https://auth.app.kognic.com"},
		{name: "WithAuthServer with query", env: idEnv, opts: []Option{WithAuthServer("https://auth.example?x=1")},
			wantErr: `clientlib: WithAuthServer: "https://auth.example" must not have a query or fragment; e.g. https://auth.app.kognic.com`},
		{name: "WithAuthServer plain http", env: idEnv, opts: []Option{WithAuthServer("http://auth.example")},
			wantErr: "clientlib: refusing to send credentials without TLS: the auth server http://auth.example (WithAuthServer) is plain http and would receive the client secret unencrypted; use https (plain http is accepted only for loopback)"},
		{name: "two options", opts: []Option{WithCredentialsFile(file), WithClientCredentials("a", "b")},
			wantErr: "clientlib: WithCredentialsFile and WithClientCredentials both say where tokens come from; pass only one of WithBroker, WithCredentialsFile, WithClientCredentials, WithEnvironment and WithEnvironmentByHost (WithEnvironment combines with WithCredentialsFile)"},
		{name: "WithBroker twice", opts: []Option{WithBroker("a:1", ""), WithBroker("b:1", "")},
			wantErr: "clientlib: WithBroker and WithBroker both say where tokens come from; pass only one of WithBroker, WithCredentialsFile, WithClientCredentials, WithEnvironment and WithEnvironmentByHost (WithEnvironment combines with WithCredentialsFile)"},
		// kognic-auth's --env with --credentials: the environment's auth
		// server and scopes, the file's credentials.
		{name: "WithEnvironment with WithCredentialsFile", env: idEnv,
			opts: []Option{WithEnvironmentsFile(envs), WithEnvironment("bare"), WithCredentialsFile(file)},
			want: want{mode: modeDirect, from: `environment "bare" of testdata/kognic/environments.json with credentials file ` + file,
				tokenURL: "https://auth.bare.example/v1/auth/oauth/token", clientID: fileClient, scopes: []string{"env:scope"}}},
		{name: "WithCredentialsFile with WithEnvironment", env: idEnv,
			opts: []Option{WithCredentialsFile(file), WithEnvironmentsFile(envs), WithEnvironment("bare"), WithScopes("s")},
			want: want{mode: modeDirect, from: `environment "bare" of testdata/kognic/environments.json with credentials file ` + file,
				tokenURL: "https://auth.bare.example/v1/auth/oauth/token", clientID: fileClient, scopes: []string{"s"}}},
		{name: "XDG_CONFIG_HOME moves the environments file", env: map[string]string{"XDG_CONFIG_HOME": xdg},
			opts: []Option{WithEnvironment("full")},
			want: want{mode: modeDirect, from: `environment "full" of ` + filepath.Join(xdg, "kognic/environments.json"),
				tokenURL: "https://auth.full.example/v1/auth/oauth/token", clientID: fileClient, scopes: []string{"read:inputs"}}},
		{name: "WithEnvironment with WithCredentialsFile missing",
			opts:    []Option{WithEnvironmentsFile(envs), WithEnvironment("bare"), WithCredentialsFile("testdata/nope.json")},
			wantErr: "clientlib: WithCredentialsFile: " + fileErr("testdata/nope.json")},
		{name: "both name credentials",
			opts:    []Option{WithEnvironmentsFile(envs), WithEnvironment("full"), WithCredentialsFile(file)},
			wantErr: `clientlib: WithCredentialsFile (testdata/credentials.json) and environment "full" of testdata/kognic/environments.json (credentials testdata/credentials.json) both name credentials; drop one of them (--credentials or --env in broker token and broker call), or remove the environment's credentials key`},
		{name: "WithEnvironment with WithClientCredentials",
			opts:    []Option{WithEnvironmentsFile(envs), WithEnvironment("bare"), WithClientCredentials("a", "b")},
			wantErr: "clientlib: WithEnvironment and WithClientCredentials both say where tokens come from; pass only one of WithBroker, WithCredentialsFile, WithClientCredentials, WithEnvironment and WithEnvironmentByHost (WithEnvironment combines with WithCredentialsFile)"},
		{name: "three options",
			opts:    []Option{WithEnvironment("bare"), WithCredentialsFile(file), WithBroker("a:1", "")},
			wantErr: "clientlib: WithEnvironment and WithCredentialsFile both say where tokens come from; pass only one of WithBroker, WithCredentialsFile, WithClientCredentials, WithEnvironment and WithEnvironmentByHost (WithEnvironment combines with WithCredentialsFile)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &clientConfig{source: defaultSourceConfig(), now: func() time.Time { return now }}
			WithEnv(mapLookup(tc.env)).configureClient(cfg)
			for _, o := range tc.opts {
				o.configureClient(cfg)
			}
			p, err := resolve(cfg)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error\n%v\nwant\n%s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{mode: p.mode, from: p.from, addr: p.addr, tenant: p.tenant,
				tokenURL: p.direct.TokenURL, clientID: p.direct.ClientID, scopes: p.direct.Scopes}
			if got.mode != tc.want.mode || got.from != tc.want.from || got.addr != tc.want.addr || got.tenant != tc.want.tenant ||
				got.tokenURL != tc.want.tokenURL || got.clientID != tc.want.clientID || !slices.Equal(got.scopes, tc.want.scopes) {
				t.Fatalf("plan\n%+v\nwant\n%+v", got, tc.want)
			}
			if p.mode == modeDirect && p.direct.ClientSecret.Reveal() == "" {
				t.Fatal("direct mode without a client secret")
			}
		})
	}
}

func TestNotConfiguredWraps(t *testing.T) {
	cfg := &clientConfig{source: defaultSourceConfig()}
	WithEnv(nil).configureClient(cfg)
	if _, err := resolve(cfg); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("err = %v, want ErrNotConfigured", err)
	}
}

func TestBrokerTarget(t *testing.T) {
	for _, tc := range []struct {
		addr, target string
		local        bool
	}{
		{"broker:50051", "dns:///broker:50051", false},
		{"broker.ns.svc.cluster.local:50051", "dns:///broker.ns.svc.cluster.local:50051", false},
		{"127.0.0.1:50051", "dns:///127.0.0.1:50051", true},
		{"localhost:50051", "dns:///localhost:50051", true},
		{"[::1]:50051", "dns:///[::1]:50051", true},
		{"[::1]", "dns:///[::1]", true},
		{"localhost.:50051", "dns:///localhost.:50051", false},
		{"broker.localhost:50051", "dns:///broker.localhost:50051", false},
		{"dns:///broker:50051", "dns:///broker:50051", false},
		{"dns://8.8.8.8/localhost:50051", "dns://8.8.8.8/localhost:50051", true},
		{"passthrough:///127.0.0.1:1", "passthrough:///127.0.0.1:1", true},
		{"unix:///run/tokenbroker.sock", "unix:///run/tokenbroker.sock", true},
		{"unix:relative.sock", "unix:relative.sock", true},
	} {
		target := brokerTarget(tc.addr)
		if target != tc.target || isLocalTarget(target) != tc.local {
			t.Errorf("%s: target %q local %v, want %q %v", tc.addr, target, isLocalTarget(target), tc.target, tc.local)
		}
	}
}

func mapLookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func tenantErr(name string) string { return names.ValidTenant(name).Error() }

func scopesErr(scope string) string {
	_, err := names.NormalizeScopes([]string{scope})
	return err.Error()
}
