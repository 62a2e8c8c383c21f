package clientlib

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
)

// TestDeprecationWarningsBounded: the endpoints remembered as warned about
// stay at maxWarned however many deprecated endpoints answer.
func TestDeprecationWarningsBounded(t *testing.T) {
	tr := &apiTransport{log: slog.New(slog.DiscardHandler), warned: map[string]bool{}}
	resp := &http.Response{Header: http.Header{"Sunset": {"Sat, 31 Dec 2033 23:59:59 GMT"}}}
	for i := range 2 * maxWarned {
		req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "https", Host: "api.example", Path: fmt.Sprint("/v", i)}}
		tr.warnDeprecated(req, resp)
	}
	if len(tr.warned) != maxWarned {
		t.Errorf("%d endpoints remembered, want %d", len(tr.warned), maxWarned)
	}
}
