package daemon_test

import (
	"fmt"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// TestTracesCarryNoSecrets records every span of a broker that fetched
// tokens from its IdP and served GetToken to an API key caller (and
// refused a wrong key), and checks that no attribute, event, link or
// status of any span holds the API key, the client secret (in any
// encoding), a token or authorization metadata.
func TestTracesCarryNoSecrets(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(t.Context())
	s := brokertest.StartSecuredWith(t, daemon.Options{TracerProvider: tp})
	api := s.API(s.TLSOnly())
	if _, err := s.Get(brokertest.Bearer(t.Context(), s.APIKey), api, "team-a"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(brokertest.Bearer(t.Context(), s.WrongKey), api, "team-a")
	brokertest.WantStatus(t, "a wrong key", err, codes.Unauthenticated)
	// Each tenant's first fetch runs in the background from the start, and
	// a server span ends just after the client has its answer: wait until
	// the spans have ended.
	eventually(t, "the GetToken server span and the tenants' IdP request spans", func() bool {
		server, idp := 0, 0
		for _, sp := range rec.Ended() {
			switch {
			case sp.Name() == "tokenbroker.v1.TokenBrokerService/GetToken":
				server++
			case strings.HasPrefix(sp.Name(), "HTTP POST") || sp.Name() == "POST":
				idp++
			}
		}
		return server >= 1 && idp >= 3
	})

	var b strings.Builder
	var server, idp int
	write := func(kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			fmt.Fprintf(&b, "%s=%s\n", kv.Key, kv.Value.String())
		}
	}
	for _, sp := range rec.Ended() {
		fmt.Fprintf(&b, "span %s %s %s\n", sp.Name(), sp.Status().Code, sp.Status().Description)
		write(sp.Attributes())
		for _, e := range sp.Events() {
			b.WriteString(e.Name + "\n")
			write(e.Attributes)
		}
		for _, l := range sp.Links() {
			write(l.Attributes)
		}
		switch {
		case sp.Name() == "tokenbroker.v1.TokenBrokerService/GetToken":
			server++
		case strings.HasPrefix(sp.Name(), "HTTP POST") || sp.Name() == "POST":
			idp++
		}
	}
	spans := b.String()
	// The wrong key is refused when its stream opens (the tap runs before
	// the stats handler that starts spans), so only the good call has one.
	if server != 1 || idp < 3 {
		t.Fatalf("recorded %d GetToken server spans and %d IdP request spans, want 1 and at least 3:\n%s", server, idp, spans)
	}
	tokens, _ := s.Seen()
	needles := map[string]string{
		"API key": s.APIKey, "wrong API key": s.WrongKey, "client secret": s.Client.Secret,
		"authorization metadata": "authorization", "bearer prefix": "Bearer ",
	}
	for i, tok := range tokens {
		needles[fmt.Sprintf("token %d", i)] = tok
	}
	for i, f := range faultidp.SecretForms(s.Client.ID, s.Client.Secret) {
		needles[fmt.Sprintf("secret form %d", i)] = f
	}
	logtest.AssertNone(t, map[string]string{"span attributes": strings.ToLower(spans), "spans": spans}, needles)
	t.Logf("spans:\n%s", spans)
}
