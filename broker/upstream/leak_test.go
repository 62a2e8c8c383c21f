package upstream_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/credentials"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// nastySecret holds every character that URL, base64 and JSON encode
// differently.
const nastySecret = `n4sty/se+cr=et&50%25"<x>`

// SecretForms returns every form in which a (clientID, secret) pair can be
// echoed by an IdP; see upstream's scrubber.
func secretForms(clientID, secret string) []string {
	forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret),
		strings.ToLower(url.QueryEscape(secret))}
	j, _ := json.Marshal(secret)
	forms = append(forms, strings.Trim(string(j), `"`))
	for _, p := range []string{secret, clientID + ":" + secret, url.QueryEscape(clientID) + ":" + url.QueryEscape(secret)} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			forms = append(forms, enc.EncodeToString([]byte(p)))
		}
	}
	return forms
}

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
				c, err := upstream.New(upstream.Config{TokenURL: idp.TokenURL(), ClientID: "the client", ClientSecret: credentials.Secret(nastySecret), AuthStyle: style})
				if err != nil {
					t.Fatal(err)
				}
				_, err = c.Fetch(t.Context(), []string{"read"})
				if _, ok := errors.AsType[*upstream.Error](err); !ok {
					t.Fatalf("err = %v, want *upstream.Error", err)
				}
				msg := err.Error()
				for _, f := range secretForms("the client", nastySecret) {
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
