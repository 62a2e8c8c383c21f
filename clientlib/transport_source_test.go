package clientlib_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/clientlib"
)

// authServer is a loopback resource server that records the Authorization
// header of every request and accepts only the tokens in accept.
type authServer struct {
	*httptest.Server
	mu     sync.Mutex
	seen   []string
	accept map[string]bool
}

func startAuthServer(t *testing.T, accept ...string) *authServer {
	a := &authServer{accept: map[string]bool{}}
	for _, tok := range accept {
		a.accept["Bearer "+tok] = true
	}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		a.mu.Lock()
		a.seen = append(a.seen, authz)
		a.mu.Unlock()
		if !a.accept[authz] {
			http.Error(w, "rejected", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "hello")
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *authServer) Seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seen)
}

// clientOver returns an http.Client over a Transport of src.
func clientOver(t *testing.T, src oauth2.TokenSource) *http.Client {
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return &http.Client{Transport: clientlib.NewTransport(src, clientlib.WithBaseTransport(base))}
}

func TestTransportStaticTokenSource(t *testing.T) {
	srv := startAuthServer(t, "good")
	hc := clientOver(t, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "good"}))
	if code, body := getBody(t, hc, srv.URL); code != 200 || body != "hello" {
		t.Fatalf("GET with a static token = %d %q, want 200", code, body)
	}

	// A source that cannot invalidate gets the 401 passed through, with
	// its body, and no retry.
	hc = clientOver(t, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "bad", TokenType: "bearer"}))
	if code, body := getBody(t, hc, srv.URL); code != 401 || body != "rejected\n" {
		t.Fatalf("GET with a rejected static token = %d %q, want the server's 401", code, body)
	}
	if seen := srv.Seen(); !slices.Equal(seen, []string{"Bearer good", "Bearer bad"}) {
		t.Fatalf("the server saw %q, want one request per call, each with its token", seen)
	}
}

// rotatingSource hands out tokens in order; Invalidate moves on to the next.
type rotatingSource struct {
	mu       sync.Mutex
	tokens   []string
	reported []string
}

func (r *rotatingSource) Token() (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &oauth2.Token{AccessToken: r.tokens[0]}, nil
}

func (r *rotatingSource) Invalidate(_ context.Context, tok *oauth2.Token) (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reported = append(r.reported, tok.AccessToken)
	if len(r.tokens) > 1 && r.tokens[0] == tok.AccessToken {
		r.tokens = r.tokens[1:]
	}
	return &oauth2.Token{AccessToken: r.tokens[0]}, nil
}

var _ clientlib.Invalidator = (*rotatingSource)(nil)
var _ clientlib.Invalidator = (*clientlib.Source)(nil)

func TestTransportInvalidatorSource(t *testing.T) {
	srv := startAuthServer(t, "second")
	src := &rotatingSource{tokens: []string{"first", "second"}}
	if code, body := getBody(t, clientOver(t, src), srv.URL); code != 200 || body != "hello" {
		t.Fatalf("GET = %d %q, want 200 after one retry with the replacement", code, body)
	}
	if seen := srv.Seen(); !slices.Equal(seen, []string{"Bearer first", "Bearer second"}) {
		t.Fatalf("the server saw %q, want the rejected token, then its replacement", seen)
	}
	if !slices.Equal(src.reported, []string{"first"}) {
		t.Fatalf("Invalidate got %q, want the rejected token once", src.reported)
	}
}

// A source that cannot replace the rejected token gets no retry.
func TestTransportInvalidatorNoReplacement(t *testing.T) {
	srv := startAuthServer(t)
	src := &rotatingSource{tokens: []string{"only"}}
	if code, _ := getBody(t, clientOver(t, src), srv.URL); code != 401 {
		t.Fatalf("GET = %d, want the 401", code)
	}
	if n := len(srv.Seen()); n != 1 || !slices.Equal(src.reported, []string{"only"}) {
		t.Fatalf("%d requests, reported %q; want one request and one report", n, src.reported)
	}
}

func TestTransportSourceWithoutToken(t *testing.T) {
	base := &countingBase{}
	for name, src := range map[string]oauth2.TokenSource{
		"empty token": oauth2.StaticTokenSource(&oauth2.Token{}),
		"error":       errSource{},
	} {
		t.Run(name, func(t *testing.T) {
			tr := clientlib.NewTransport(src, clientlib.WithBaseTransport(base))
			req, _ := http.NewRequestWithContext(t.Context(), "GET", "https://api.example.com/x?secret=1", nil)
			_, err := tr.RoundTrip(req)
			if err == nil || !strings.Contains(err.Error(), "no token for GET https://api.example.com/x") || strings.Contains(err.Error(), "secret") {
				t.Fatalf("RoundTrip = %v, want an error naming the request without its query", err)
			}
			if len(base.reqs) != 0 {
				t.Fatal("a request went out without a token")
			}
		})
	}
}

type errSource struct{}

func (errSource) Token() (*oauth2.Token, error) { return nil, errors.New("no luck") }
