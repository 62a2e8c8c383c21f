package faultidp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T) *Server {
	s := Start()
	t.Cleanup(s.Close)
	return s
}

// post sends a token request and returns status, Retry-After and body.
func post(t *testing.T, ctx context.Context, s *Server) (int, string, string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL(),
		strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b), err
}

func TestPushOrderThenDefault(t *testing.T) {
	s := start(t)
	s.Push(OAuthError(503, "temporarily_unavailable", ""), TooManyRequests("7"))
	s.Push(Garbage())
	want := []struct {
		status     int
		retryAfter string
		body       string
	}{
		{503, "", `{"error":"temporarily_unavailable"}`},
		{429, "7", "rate limited\n"},
		{200, "", "<html>not a token</html>"},
		{200, "", `{"access_token":"faultidp-token","token_type":"Bearer","expires_in":3600}`},
		{200, "", `{"access_token":"faultidp-token","token_type":"Bearer","expires_in":3600}`},
	}
	for i, w := range want {
		status, ra, body, err := post(t, t.Context(), s)
		if err != nil || status != w.status || ra != w.retryAfter || body != w.body {
			t.Fatalf("request %d: %d Retry-After %q %q %v; want %d %q %q", i, status, ra, body, err, w.status, w.retryAfter, w.body)
		}
	}
	s.SetDefault(OAuthError(401, "invalid_client", "bad"))
	if status, _, body, _ := post(t, t.Context(), s); status != 401 || body != `{"error":"invalid_client","error_description":"bad"}` {
		t.Fatalf("after SetDefault: %d %s", status, body)
	}
	if got := s.Requests(); got != int64(len(want)+1) {
		t.Fatalf("Requests = %d, want %d", got, len(want)+1)
	}
}

func TestOKExpiresIn(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{60, `,"expires_in":60}`},
		{nil, `"token_type":"Bearer"}`},
		{`"60"`, `,"expires_in":"60"}`},
	} {
		if got := OK("t", tc.in).Body; !strings.HasSuffix(got, tc.want) {
			t.Errorf("OK(%v) body %s, want suffix %s", tc.in, got, tc.want)
		}
	}
}

func TestLastRequestWithOAuth2Client(t *testing.T) {
	s := start(t)
	if f, h := s.LastRequest(); f != nil || h != nil {
		t.Fatalf("LastRequest before any = %v %v", f, h)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, &http.Client{Transport: tr})
	cc := clientcredentials.Config{ClientID: "id", ClientSecret: "sec", TokenURL: s.TokenURL(),
		Scopes: []string{"a", "b"}, AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := cc.Token(ctx)
	if err != nil || tok.AccessToken != "faultidp-token" {
		t.Fatalf("Token = %v, %v", tok, err)
	}
	form, header := s.LastRequest()
	want := url.Values{"grant_type": {"client_credentials"}, "scope": {"a b"}}
	if form.Encode() != want.Encode() {
		t.Errorf("form = %v, want %v", form, want)
	}
	r := http.Request{Header: header}
	if id, sec, ok := r.BasicAuth(); !ok || id != "id" || sec != "sec" {
		t.Errorf("basic auth = %q %q %v", id, sec, ok)
	}
}

// waitInFlight waits until n requests are in flight.
func waitInFlight(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.InFlight() != n {
		if time.Now().After(deadline) {
			t.Fatalf("InFlight = %d, want %d", s.InFlight(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHangUnblocksOnClientCancel(t *testing.T) {
	s := start(t)
	s.Push(Response{Hang: true}, Response{Delay: time.Hour})
	for _, name := range []string{"hang", "delay"} {
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { _, _, _, err := post(t, ctx, s); errc <- err }()
		waitInFlight(t, s, 1)
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: client error %v, want context.Canceled", name, err)
		}
		waitInFlight(t, s, 0) // the handler returned without Close
	}
}

func TestHangUnblocksOnClose(t *testing.T) {
	s := Start()
	s.Push(Response{Hang: true}, Response{Delay: time.Hour})
	errc := make(chan error, 2)
	for range 2 {
		go func() { _, _, _, err := post(t, t.Context(), s); errc <- err }()
	}
	waitInFlight(t, s, 2)
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs while a request is hung")
	}
	for range 2 {
		if err := <-errc; err == nil {
			t.Error("hung request got a response, want a connection error")
		}
	}
	s.Close() // idempotent
}
