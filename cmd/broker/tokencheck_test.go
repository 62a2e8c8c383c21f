package main

import (
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// TestBrokerTokenDirectPrintsOnlyValidTokens: `broker token` in direct
// mode against an auth server that echoes the client secret as the
// access_token, or answers one holding CR LF or a terminal escape, prints
// nothing and fails naming the access_token, never quoting it.
func TestBrokerTokenDirectPrintsOnlyValidTokens(t *testing.T) {
	const id, secret = "direct-client", "D1rect/S3cret+Value-77"
	for _, tc := range []struct {
		name, why string
		resp      faultidp.Response
	}{
		{"echoed secret", "echoes the client credentials", faultidp.EchoAccessToken(func(_, s string) string { return s })},
		{"CR LF", "is not an RFC 6750 token", faultidp.OK("tok\r\nX-Injected: 1", 3600)},
		{"terminal escape", "is not an RFC 6750 token", faultidp.OK("\x1b]0;X-Injected\x07tok", 3600)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idp := faultidp.Start()
			defer idp.Close()
			idp.SetDefault(tc.resp)
			var out, errOut strings.Builder
			err := run(t.Context(), []string{"token", "--timeout", "2s"},
				envFunc("KOGNIC_CLIENT_ID", id, "KOGNIC_CLIENT_SECRET", secret, "KOGNIC_AUTH_SERVER", idp.URL()), &out, &errOut)
			if err == nil || out.String() != "" {
				t.Fatalf("printed %q, err %v; want nothing and an error", out.String(), err)
			}
			if !strings.Contains(err.Error(), "access_token "+tc.why) {
				t.Errorf("error %q, want it to say the access_token %s", err, tc.why)
			}
			all := err.Error() + errOut.String()
			for _, f := range append(faultidp.SecretForms(id, secret), "X-Injected", "\x1b", "\r") {
				if strings.Contains(all, f) {
					t.Errorf("output quotes %q: %s", f, all)
				}
			}
		})
	}
}
