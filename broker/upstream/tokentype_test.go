package upstream_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// token_type reaches callers, so only a token type name does: anything
// else (e.g. the secret echoed back) makes the response invalid, a
// transient error that shows neither the value nor the body.
func TestFetchAcceptsOnlyTokenTypeNames(t *testing.T) {
	for _, tc := range []struct {
		raw, want string // want "" means refused
	}{
		{"bearer", "Bearer"}, {"Bearer", "Bearer"}, {"BEARER", "Bearer"}, {"", "Bearer"},
		{"dpop", "DPoP"}, {"N_A", "N_A"}, {"mac", "MAC"},
		{secret, ""}, {faultidp.RedTeamSecret, ""}, {"Bearer x", ""}, {"1bearer", ""},
		{strings.Repeat("a", 33), ""}, {"bearér", ""}, {"bearer\u200b", ""},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			idp := faultidp.Start()
			defer idp.Close()
			body, _ := json.Marshal(map[string]any{"access_token": "tok-1", "token_type": tc.raw, "expires_in": 3600})
			idp.Push(faultidp.Response{Status: 200, Body: string(body), Header: http.Header{"Content-Type": {"application/json"}}})
			g, err := client(t, idp, 0).Fetch(t.Context(), nil)
			if tc.want != "" {
				if err != nil || g.TokenType != tc.want {
					t.Fatalf("token_type %q: got %q, %v; want %q", tc.raw, g.TokenType, err, tc.want)
				}
				return
			}
			ue, ok := errors.AsType[*upstream.Error](err)
			if !ok || ue.Permanent || g.AccessToken != "" {
				t.Fatalf("token_type %q: got grant %v, err %v; want a transient *upstream.Error", tc.raw, g, err)
			}
			if msg := err.Error(); !strings.Contains(msg, "invalid token_type") || (len(tc.raw) > 1 && strings.Contains(msg, tc.raw)) {
				t.Errorf("token_type %q: message %q", tc.raw, msg)
			}
		})
	}
}
