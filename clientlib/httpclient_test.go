package clientlib_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/clientlib"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

func env(kv ...string) clientlib.Option {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return clientlib.WithEnv(func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	})
}

func newHTTPClient(t *testing.T, opts ...clientlib.Option) *clientlib.HTTPClient {
	t.Helper()
	hc, err := clientlib.NewHTTPClient(t.Context(), append([]clientlib.Option{fast}, opts...)...)
	if err != nil {
		t.Fatalf("NewHTTPClient: %v", err)
	}
	t.Cleanup(func() { _ = hc.Close() })
	return hc
}

func getBody(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestNewHTTPClientBrokerMode(t *testing.T) {
	s := startStack(t, stackConfig{})
	res := startResource(t, s.IdP, s.Client.ID)
	res.rejectFirst = true
	hc := newHTTPClient(t, env("TOKENBROKER_ADDR", s.Addr(), "KOGNIC_CLIENT_ID", "ignored", "KOGNIC_CLIENT_SECRET", "ignored"))

	if !strings.Contains(hc.String(), "broker "+s.Addr()+`, tenant "default" (from TOKENBROKER_ADDR)`) {
		t.Fatalf("String() = %q", hc.String())
	}
	for i := range 3 {
		if code, body := getBody(t, hc.Client(), res.URL); code != 200 || body != "hello, "+s.Client.ID {
			t.Fatalf("GET %d = %d %q, want 200", i, code, body)
		}
	}
	if n := s.Calls("InvalidateToken"); n != 1 {
		t.Fatalf("InvalidateToken calls = %d, want 1", n)
	}
	if n := s.IdP.RequestsFor(s.Client.ID); n != 2 {
		t.Fatalf("IdP requests = %d, want 2 (first token, replacement)", n)
	}
}

func TestNewHTTPClientDirectMode(t *testing.T) {
	c := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	res := startResource(t, idp, c.ID)
	res.rejectFirst = true
	hc := newHTTPClient(t, env("TOKENBROKER_TENANT", ""), // nothing but options
		clientlib.WithClientCredentials(c.ID, c.Secret), clientlib.WithAuthServer(idp.URL()))

	if want := "direct to " + idp.TokenURL() + " as client " + c.ID + " (from WithClientCredentials)"; !strings.Contains(hc.String(), want) {
		t.Fatalf("String() = %q, want it to contain %q", hc.String(), want)
	}
	for i := range 3 {
		if code, _ := getBody(t, hc.Client(), res.URL); code != 200 {
			t.Fatalf("GET %d = %d, want 200", i, code)
		}
	}
	// One token, one replacement after the 401; the rest from the cache.
	if n := idp.RequestsFor(c.ID); n != 2 {
		t.Fatalf("IdP requests = %d, want 2", n)
	}
	if seen := res.Seen(); len(seen) != 4 || seen[0] == seen[1] || seen[1] != seen[3] {
		t.Fatalf("the resource server saw %d requests; want the rejected token once, then its replacement", len(seen))
	}
}

func TestNewHTTPClientDirectModeFromEnv(t *testing.T) {
	// The credentials file's client, registered at the IdP.
	c := devidp.Client{ID: "fake-clientlib-client", Secret: "FAKE-SECRET-clientlib-do-not-use"}
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	res := startResource(t, idp, c.ID)
	hc := newHTTPClient(t, env("KOGNIC_CREDENTIALS", "testdata/credentials.json", "KOGNIC_AUTH_SERVER", idp.URL()))
	if code, _ := getBody(t, hc.Client(), res.URL); code != 200 {
		t.Fatalf("GET = %d, want 200", code)
	}
	tok, err := hc.Source().Token()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(hc.String(), "(from credentials file testdata/credentials.json)") || tok.Type() != "Bearer" {
		t.Fatalf("String() = %q, token type %q", hc.String(), tok.Type())
	}
}

func TestDirectModeUserAgent(t *testing.T) {
	idp := faultidp.Start()
	defer idp.Close()
	hc := newHTTPClient(t, env(), clientlib.WithClientCredentials("id", "secret"), clientlib.WithAuthServer(idp.URL()))
	_ = hc
	_, header := idp.LastRequest()
	ua := header.Get("User-Agent")
	if !regexp.MustCompile(`^tokenbroker-clientlib/\S+ go/go1\.\d+`).MatchString(ua) {
		t.Fatalf("User-Agent = %q, want tokenbroker-clientlib/<version> go/<go version>", ua)
	}
}

func TestNewHTTPClientDirectModeRejected(t *testing.T) {
	c := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	// No deadline: rejected credentials fail at once.
	hc, err := clientlib.NewHTTPClient(context.Background(), env(),
		clientlib.WithClientCredentials(c.ID, "wrong"), clientlib.WithAuthServer(idp.URL()))
	ue, ok := errors.AsType[*upstream.Error](err)
	if hc != nil || !ok || !ue.Permanent || !strings.Contains(err.Error(), "(direct mode, WithClientCredentials)") {
		t.Fatalf("NewHTTPClient = %v; want the IdP's permanent rejection, saying where the credentials came from", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatal("the error reveals the secret")
	}
}

func TestNewHTTPClientNotConfigured(t *testing.T) {
	_, err := clientlib.NewHTTPClient(t.Context(), env())
	if !errors.Is(err, clientlib.ErrNotConfigured) {
		t.Fatalf("err = %v, want ErrNotConfigured", err)
	}
	for _, v := range []string{"TOKENBROKER_ADDR", "KOGNIC_CREDENTIALS", "KOGNIC_CLIENT_ID", "KOGNIC_CLIENT_SECRET"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("the error does not mention %s", v)
		}
	}
}

func TestNewHTTPClientBrokerUnreachable(t *testing.T) {
	s := startStack(t, stackConfig{})
	addr := s.Addr()
	s.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	hc, err := clientlib.NewHTTPClient(ctx, env("TOKENBROKER_ADDR", addr), fast)
	if hc != nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "(broker "+addr+", from TOKENBROKER_ADDR)") {
		t.Fatalf("NewHTTPClient = %v; want DeadlineExceeded naming the broker", err)
	}
}

func TestHTTPClientClose(t *testing.T) {
	s := startStack(t, stackConfig{})
	res := startResource(t, s.IdP, s.Client.ID)
	hc, err := clientlib.NewHTTPClient(t.Context(), clientlib.WithBroker(s.Addr(), ""))
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := getBody(t, hc.Client(), res.URL); code != 200 {
		t.Fatalf("GET = %d", code)
	}
	for range 2 {
		if err := hc.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if _, err := hc.Client().Get(res.URL); !errors.Is(err, clientlib.ErrClosed) {
		t.Fatalf("GET after Close: %v, want ErrClosed", err)
	}
}
