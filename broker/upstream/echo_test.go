package upstream_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// The issue 7 red team's encodings: an IdP that repeats the credentials
// double-escaped, PHP-escaped, as HTML entities, base64 of escaped forms
// or truncated gets its whole description withheld; and a malformed
// response quoting the secret yields a transport error that quotes
// nothing the server sent.
func TestFetchWithholdsEveryEncodedEcho(t *testing.T) {
	const id = "rt7client"
	for _, enc := range faultidp.Encodings {
		for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
			t.Run(fmt.Sprintf("%s/style %d", enc.Name, style), func(t *testing.T) {
				idp := faultidp.Start()
				defer idp.Close()
				idp.Push(faultidp.EchoEncoded(400, enc.Encode))
				msg := fetchError(t, idp, id, style)
				assertNoSecret(t, msg, id)
				if !strings.Contains(msg, "invalid_request (description withheld)") {
					t.Errorf("message %q, want the description withheld", msg)
				}
			})
		}
	}
	t.Run("malformed response quoting the secret", func(t *testing.T) {
		idp := faultidp.Start()
		defer idp.Close()
		idp.Push(faultidp.MalformedEcho())
		msg := fetchError(t, idp, id, oauth2.AuthStyleInParams)
		assertNoSecret(t, msg, id)
		if !strings.Contains(msg, ": malformed HTTP response (details withheld") || strings.Contains(msg, "MIME") {
			t.Errorf("message %q, want only the kind of transport error", msg)
		}
	})
}

func fetchError(t *testing.T, idp *faultidp.Server, id string, style oauth2.AuthStyle) string {
	t.Helper()
	c, err := upstream.New(upstream.Config{TokenURL: idp.TokenURL(), ClientID: id,
		ClientSecret: creds.Secret(faultidp.RedTeamSecret), AuthStyle: style})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Fetch(t.Context(), nil)
	if _, ok := errors.AsType[*upstream.Error](err); !ok {
		t.Fatalf("err = %v, want *upstream.Error", err)
	}
	return err.Error()
}

func assertNoSecret(t *testing.T, msg, id string) {
	t.Helper()
	low := strings.ToLower(msg)
	for _, f := range faultidp.SecretForms(id, faultidp.RedTeamSecret) {
		if strings.Contains(low, strings.ToLower(f)) {
			t.Errorf("message contains the secret form %q: %s", f, msg)
		}
	}
}
