package statuspage_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// liveBroker is a real broker with two tenants: "payments" against the dev
// IdP (READY) and "billing-eu" against a token endpoint that always answers
// 503 (FAILING). It records every value the page must never show.
type liveBroker struct {
	b *broker.Broker
	// secrets the page must never show: the payments token, both client
	// ids and secrets, and the API key in billing-eu's token URL query.
	secrets map[string]string
	idpHost string // payments' token endpoint host
}

const querySecret = "qk-9f3b7d2e61a4"

func startLiveBroker(t *testing.T) *liveBroker {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()

	client := devidp.NewClient()
	idp, err := devidp.Start(ctx, devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idp.Close() })
	down := faultidp.Start()
	t.Cleanup(down.Close)
	down.SetDefault(faultidp.Response{Status: http.StatusServiceUnavailable, Body: "maintenance\n"})

	const downID, downSecret = "billing-client-4471", "billing-secret-d81c0a"
	b, err := broker.New(broker.Config{Tenants: []broker.Tenant{
		{Name: "payments", TokenURL: idp.TokenURL(), ClientID: client.ID,
			ClientSecret: creds.Secret(client.Secret), Scopes: []string{"read"}},
		{Name: "billing-eu", TokenURL: down.TokenURL() + "?api_key=" + querySecret, ClientID: downID,
			ClientSecret: creds.Secret(downSecret)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	awaitState(ctx, t, b, "payments", broker.StateReady)
	awaitState(ctx, t, b, "billing-eu", broker.StateFailing)
	tok, err := b.Token(ctx, "payments", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &liveBroker{
		b: b,
		secrets: map[string]string{
			"access token":             tok.AccessToken,
			"payments client id":       client.ID,
			"payments client secret":   client.Secret,
			"billing-eu client id":     downID,
			"billing-eu client secret": downSecret,
			"token URL query":          querySecret,
		},
		idpHost: idp.URL()[len("http://"):],
	}
}

// awaitState watches tenant's default scope set until it reaches want.
func awaitState(ctx context.Context, t *testing.T, b *broker.Broker, tenant string, want broker.State) {
	t.Helper()
	w, err := b.Watch(tenant, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		select {
		case <-w.Ready():
		case <-ctx.Done():
			t.Fatalf("tenant %s never became %v", tenant, want)
		}
		u, ok, ended := w.Next()
		if ended {
			t.Fatalf("watch of %s ended: %v", tenant, w.Err())
		}
		if ok && u.Status.State == want {
			return
		}
	}
}
