package upstream_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://idp.example.com/oauth2/token":                      "https://idp.example.com/oauth2/token",
		"https://idp.example.com:8443/t?key=K&x=1":                  "https://idp.example.com:8443/t",
		"https://u:pw@idp.example.com/t?#frag":                      "https://idp.example.com/t",
		"http://127.0.0.1:9/t?":                                     "http://127.0.0.1:9/t",
		"https://idp.example.com/a%2Fb?key=K":                       "https://idp.example.com/a%2Fb",
		"https:u:pw@idp.example.com/t":                              "https:",
		"idp.example.com:443/token?key=K":                           "idp.example.com:443/token",
		"/relative?key=K":                                           "/relative",
		"://bad?key=K":                                              "[invalid URL]",
		"https://idp.example.com/t\r\n?key=K":                       "[invalid URL]",
		"https://idp.example.com/%zz?key=K":                         "[invalid URL]",
		"https://[::1]:8443/v1/auth/oauth/token?api-key=K#fragment": "https://[::1]:8443/v1/auth/oauth/token",
	} {
		if got := upstream.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// A token URL whose query holds a key (as some IdPs want) still sends it
// to the IdP, but no error, log line or span of the client shows it: they
// show RedactURL's scheme, host and path.
func TestTokenURLQueryNeverShown(t *testing.T) {
	const key = "Qk3y-in-the-query-7781"
	var mu sync.Mutex
	var queries []string
	idp := faultidp.Start()
	defer idp.Close()
	// A front that records the query the IdP receives.
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		r.URL.Scheme, r.URL.Host = "http", strings.TrimPrefix(idp.URL(), "http://")
		r.RequestURI = ""
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			http.Error(w, "front: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		_, _ = w.Write(b.Bytes())
	}))
	defer front.Close()
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	tokenURL := front.URL + faultidp.TokenPath + "?key=" + key
	shown := front.URL + faultidp.TokenPath

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(t.Context()) }()
	pools := upstream.NewPools(upstream.PoolsConfig{Wrap: func(rt http.RoundTripper) http.RoundTripper {
		return otelhttp.NewTransport(rt, otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()))
	}})
	defer pools.CloseIdleConnections()
	hc, err := pools.Client(tokenURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	c, err := upstream.New(upstream.Config{TokenURL: tokenURL, ClientID: "cid", ClientSecret: secret, HTTPClient: hc,
		Fallbacks: []upstream.Credential{{Name: "old", ClientID: "cid", ClientSecret: "old-secret-value"}},
		Logger:    slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}

	var errs []string
	for _, resp := range [][]faultidp.Response{
		{faultidp.OK("at-1", 3600)},
		{faultidp.OAuthError(401, "invalid_client", ""), faultidp.OK("at-2", 3600)}, // the fallback, logged
		{faultidp.OAuthError(400, "invalid_scope", "no such scope")},
		{faultidp.Redirect(302, "https://elsewhere.example/t?key="+key)},
		{faultidp.Garbage()},
		{faultidp.OK("tok\r\n", 3600)},
		{faultidp.EchoAccessToken(func(_, s string) string { return s })},
		{faultidp.Response{Status: 503}},
	} {
		idp.Push(resp...)
		if _, err := c.Fetch(t.Context(), nil); err != nil {
			errs = append(errs, err.Error())
			if !strings.Contains(err.Error(), "token request to "+shown+" failed") {
				t.Errorf("error %q does not name the token URL as %s", err, shown)
			}
		}
	}
	_, err = upstream.New(upstream.Config{TokenURL: "ftp://idp.example.com/t?key=" + key, ClientID: "cid", ClientSecret: secret})
	errs = append(errs, err.Error())
	_, err = pools.Client("ftp://%zz/?key="+key, nil)
	errs = append(errs, err.Error())
	for _, rules := range []upstream.URLRules{{}, {Base: true}} {
		for _, u := range []string{"ftp://idp.example.com/t?key=" + key, "http://idp.example.com/t?key=" + key} {
			if err := upstream.CheckURL(u, rules); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) != 12 {
		t.Fatalf("%d errors, want 12:\n%s", len(errs), strings.Join(errs, "\n"))
	}

	var spans strings.Builder
	for _, sp := range rec.Ended() {
		fmt.Fprintf(&spans, "span %s %s %s\n", sp.Name(), sp.Status().Code, sp.Status().Description)
		for _, kv := range sp.Attributes() {
			fmt.Fprintf(&spans, "%s=%s\n", kv.Key, kv.Value.String())
			if kv.Key == attribute.Key("url.full") && kv.Value.AsString() != shown {
				t.Errorf("span %s: url.full %q, want %q", sp.Name(), kv.Value.AsString(), shown)
			}
		}
	}
	mu.Lock()
	got := strings.Join(queries, "\n")
	mu.Unlock()
	if len(rec.Ended()) != 9 || strings.Count(got, "key="+key) != 9 {
		t.Errorf("%d spans and %d requests carrying the key, want 9 of each (the IdP needs its key):\n%s", len(rec.Ended()), strings.Count(got, "key="+key), got)
	}
	if !strings.Contains(logs.String(), "rotation fallback in use") {
		t.Errorf("no fallback log line: %s", logs)
	}
	logtest.AssertNone(t, map[string]string{"errors": strings.Join(errs, "\n"), "spans": spans.String(), "logs": logs.String()},
		map[string]string{"key": key, "query": "?key", "secret": secret, "fallback secret": "old-secret-value"})
	t.Logf("errors:\n%s\nspans:\n%s", strings.Join(errs, "\n"), spans.String())
}

// A key in the token URL's query is a secret of the client like its
// client secret: an IdP answer that echoes it, as the access token or in
// its error text, is refused or withheld (red team, issue 16: C).
func TestTokenURLKeyIsASecret(t *testing.T) {
	idp := faultidp.Start()
	defer idp.Close()
	for _, tc := range []struct {
		key  string
		resp faultidp.Response
	}{
		{"SuperSecretApiKey4242", faultidp.OK("SuperSecretApiKey4242", 3600)},
		{"Zq8!rT4#vW2$yX6*aB3~kP9^", faultidp.OAuthError(400, "invalid_request", "the key Zq8!rT4#vW2$yX6*aB3~kP9^ is not valid")},
	} {
		c, err := upstream.New(upstream.Config{TokenURL: idp.TokenURL() + "?api-key=" + url.QueryEscape(tc.key), ClientID: "cid", ClientSecret: secret})
		if err != nil {
			t.Fatal(err)
		}
		idp.Push(tc.resp)
		g, err := c.Fetch(t.Context(), nil)
		if err == nil {
			t.Errorf("the IdP echoed the URL's key as access_token %q and it was accepted", g.AccessToken)
			continue
		}
		logtest.AssertNone(t, map[string]string{"error": err.Error()}, map[string]string{"key": tc.key})
	}
}
