package upstream_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// FuzzTokenResponse drives the real Fetch against a loopback token
// endpoint answering with the fuzzed status, content type and body: no
// panic, no hang, a grant only with an RFC 6750 access token that holds
// no form of the secret, and every failure an *upstream.Error whose
// message holds none either, even when the body echoes it. Seeds are in
// testdata/fuzz/FuzzTokenResponse.
// b64token is RFC 6750 §2.1's token syntax.
var b64token = regexp.MustCompile(`^[A-Za-z0-9._~+/-]+=*$`)

func FuzzTokenResponse(f *testing.F) {
	const id, secret = "fuzz client", `fz/s3c+r=et&%41`
	var mu sync.Mutex
	var status int
	var contentType string
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		st, ct, b := status, contentType, body
		mu.Unlock()
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(st)
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c, err := upstream.New(upstream.Config{TokenURL: srv.URL + "/token", ClientID: id, ClientSecret: creds.Secret(secret),
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	if err != nil {
		f.Fatal(err)
	}
	forms := faultidp.SecretForms(id, secret)

	f.Add(200, "application/json", []byte(`{"access_token":"a","token_type":"Bearer","expires_in":3600}`))
	f.Fuzz(func(t *testing.T, st int, ct string, b []byte) {
		// Statuses net/http can send (1xx are interim answers); 200-599
		// stay as they are, so that a seed's status is the one sent.
		st = 200 + ((st-200)%400+400)%400
		if strings.ContainsAny(ct, "\r\n\x00") {
			ct = "text/plain"
		}
		mu.Lock()
		status, contentType, body = st, ct, b
		mu.Unlock()
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		g, err := c.Fetch(ctx, []string{"read"})
		if ctx.Err() != nil {
			t.Fatal("Fetch hung")
		}
		if err == nil {
			if !b64token.MatchString(g.AccessToken) {
				t.Fatalf("a grant whose access token is no b64token: %q", g.AccessToken)
			}
			for _, form := range forms {
				if strings.Contains(g.AccessToken, form) {
					t.Fatalf("a grant whose access token holds the secret form %q", form)
				}
			}
			return
		}
		if _, ok := errors.AsType[*upstream.Error](err); !ok {
			t.Fatalf("error %T, want *upstream.Error", err)
		}
		msg := err.Error()
		for _, form := range forms {
			if strings.Contains(msg, form) {
				t.Fatalf("error contains the secret form %q: %q", form, msg)
			}
		}
		if len(msg) > 700 {
			t.Fatalf("error is %d bytes long: %q", len(msg), msg)
		}
	})
}
