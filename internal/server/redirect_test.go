package server_test

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// Issue 7 §1: a token endpoint that redirects must not make the broker
// re-send the client secret to the redirect target, nor serve that
// target's token. Through a real gRPC server on loopback.
func TestRedirectingTokenEndpointIsUnavailableAndTargetSeesNothing(t *testing.T) {
	for _, code := range []int{301, 302, 307, 308} {
		for _, style := range []struct {
			name  string
			style oauth2.AuthStyle
		}{{"client_secret_post", oauth2.AuthStyleInParams}, {"client_secret_basic", oauth2.AuthStyleInHeader}} {
			t.Run(fmt.Sprintf("%d %s", code, style.name), func(t *testing.T) {
				idp, other := faultidp.Start(), faultidp.Start()
				defer idp.Close()
				defer other.Close()
				const stolen = "token-from-the-other-host"
				other.SetDefault(faultidp.OK(stolen, 3600))
				idp.SetDefault(faultidp.Redirect(code, other.TokenURL()+"?next=query-detail"))
				f := brokertest.Start(t, broker.Tenant{Name: "moved", TokenURL: idp.TokenURL(), ClientID: "c",
					ClientSecret: "moved-secret", AuthStyle: style.style})
				host := strings.TrimPrefix(other.URL(), "http://")

				for range 3 {
					tok, err := f.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "moved"})
					if tok != nil {
						t.Fatalf("GetToken served a token (from %s?)", host)
					}
					st := status.Convert(err)
					want := fmt.Sprintf("HTTP %d: redirect to host %q refused", code, host)
					if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), want) {
						t.Errorf("GetToken: %s %q, want UNAVAILABLE containing %q", st.Code(), st.Message(), want)
					}
					if strings.Contains(st.Message(), "query-detail") {
						t.Errorf("message shows the Location's query: %q", st.Message())
					}
				}
				if n := other.Requests(); n != 0 {
					t.Fatalf("the redirect target received %d requests, want 0", n)
				}
				if strings.Contains(f.Logs.String(), stolen) {
					t.Error("logs mention the redirect target's token")
				}
			})
		}
	}
}

// Issue 7 §2 at the gRPC edge: an IdP that echoes the request in its
// error_description or an HTML page leaks no form of the secret into
// GetToken errors, ListTenants.last_error or the logs.
func TestIdPEchoNeverReachesCallersOrLogs(t *testing.T) {
	const secret = faultidp.NastySecret
	const id = "echo client"
	for _, resp := range []faultidp.Response{faultidp.EchoJSON(401), faultidp.EchoJSON(400), faultidp.EchoHTML(500), faultidp.EchoHTML(200)} {
		for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
			idp := faultidp.Start()
			idp.SetDefault(resp)
			f := brokertest.Start(t, broker.Tenant{Name: "echo", TokenURL: idp.TokenURL(), ClientID: id,
				ClientSecret: creds.Secret(secret), AuthStyle: style})
			_, err := f.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "echo"})
			list, lerr := f.API.ListTenants(t.Context(), &tbv1.ListTenantsRequest{})
			if lerr != nil {
				t.Fatal(lerr)
			}
			idp.Close()
			var lastErr string
			for _, tn := range list.GetTenants() {
				if tn.GetName() == "echo" {
					lastErr = tn.GetStatus().GetLastError()
				}
			}
			if err == nil || lastErr == "" {
				t.Fatalf("GetToken err %v, last_error %q; want both set", err, lastErr)
			}
			outputs := map[string]string{"gRPC error": status.Convert(err).Message(), "last_error": lastErr, "logs": f.Logs.String()}
			for where, out := range outputs {
				for _, form := range faultidp.SecretForms(id, secret) {
					if strings.Contains(out, form) {
						t.Errorf("status %d style %d: %s contains the secret form %q", resp.Status, style, where, form)
					}
				}
				if strings.Contains(out, "<pre>") {
					t.Errorf("status %d: %s echoes the HTML body", resp.Status, where)
				}
			}
		}
	}
}
