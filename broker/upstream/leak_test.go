package upstream_test

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

func TestFetchErrorsNeverEchoTheSecret(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp faultidp.Response
	}{
		{"error_description echoing the request", faultidp.EchoJSON(401)},
		{"HTML page echoing the request", faultidp.EchoHTML(500)},
		{"200 HTML page echoing the request", faultidp.EchoHTML(200)},
	} {
		for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
			t.Run(tc.name, func(t *testing.T) {
				idp := faultidp.Start()
				defer idp.Close()
				idp.Push(tc.resp)
				c, err := upstream.New(upstream.Config{TokenURL: idp.TokenURL(), ClientID: "the client", ClientSecret: creds.Secret(faultidp.NastySecret), AuthStyle: style})
				if err != nil {
					t.Fatal(err)
				}
				_, err = c.Fetch(t.Context(), []string{"read"})
				if _, ok := errors.AsType[*upstream.Error](err); !ok {
					t.Fatalf("err = %v, want *upstream.Error", err)
				}
				msg := err.Error()
				for _, f := range faultidp.SecretForms("the client", faultidp.NastySecret) {
					if strings.Contains(msg, f) {
						t.Errorf("message contains the secret form %q: %s", f, msg)
					}
				}
				if strings.Contains(msg, "<pre>") || strings.Contains(msg, "request body") && tc.resp.Status != 401 {
					t.Errorf("message echoes the body: %s", msg)
				}
				if ue := new(upstream.Error); errors.As(err, &ue) && len(ue.Description) > upstream.MaxDescription+3 {
					t.Errorf("description is %d bytes, want at most %d", len(ue.Description), upstream.MaxDescription)
				}
			})
		}
	}
}
