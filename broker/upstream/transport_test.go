package upstream_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// A request that runs out of time through MapTransportErrors is still a
// timeout and a deadline to errors.Is/As, while its text is upstream's.
func TestMapTransportErrorsKeepsTimeouts(t *testing.T) {
	idp := faultidp.Start()
	defer idp.Close()
	idp.Push(faultidp.Response{Hang: true})
	rt := upstream.MapTransportErrors(http.DefaultTransport.(*http.Transport).Clone())
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, idp.TokenURL(), nil)
	_, err := rt.RoundTrip(req)
	te, ok := errors.AsType[*upstream.TransportError](err)
	if !ok {
		t.Fatalf("err = %T %v, want *upstream.TransportError", err, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !te.Timeout() {
		t.Errorf("err = %v: errors.Is(DeadlineExceeded) = %v, Timeout() = %v; want both", err, errors.Is(err, context.DeadlineExceeded), te.Timeout())
	}
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		t.Errorf("err = %v is not a net.Error timeout", err)
	}
}

// Every error from a malformed response reaches the caller mapped.
func TestMapTransportErrorsHidesServerText(t *testing.T) {
	idp := faultidp.Start()
	defer idp.Close()
	idp.Push(faultidp.MalformedEcho())
	hc := &http.Client{Transport: upstream.MapTransportErrors(nil)}
	resp, err := hc.PostForm(idp.TokenURL(), map[string][]string{"client_secret": {faultidp.RedTeamSecret}})
	if err == nil {
		resp.Body.Close()
		t.Fatal("a malformed response was accepted")
	}
	if _, ok := errors.AsType[*upstream.TransportError](err); !ok {
		t.Fatalf("err = %T %v, want a *upstream.TransportError inside", err, err)
	}
	if got := err.Error(); containsRun(got, faultidp.RedTeamSecret, 12) {
		t.Fatalf("error quotes the secret: %s", got)
	}
}

func containsRun(s, secret string, n int) bool {
	for i := 0; i+n <= len(secret); i++ {
		if strings.Contains(s, secret[i:i+n]) {
			return true
		}
	}
	return false
}
