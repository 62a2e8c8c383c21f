package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// Issue 7 §2, red team round 7: the secret Qz9Kp/w+x=y&z%"<>ü€Vb7Lm echoed
// by the IdP double-escaped, PHP-escaped, as HTML entities, base64 of its
// escaped form, truncated, or quoted in a malformed response reaches
// neither the gRPC error, ListTenants.last_error, nor the text and JSON
// logs, through a real gRPC server on loopback.
func TestEncodedIdPEchoNeverReachesCallersOrLogs(t *testing.T) {
	const id = "rt7client"
	type echo struct {
		name string
		resp faultidp.Response
	}
	var echoes []echo
	for _, e := range faultidp.Encodings {
		echoes = append(echoes, echo{e.Name, faultidp.EchoEncoded(400, e.Encode)})
	}
	echoes = append(echoes, echo{"malformed response", faultidp.MalformedEcho()})

	var tenants []broker.Tenant
	for i, e := range echoes {
		idp := faultidp.Start()
		defer idp.Close()
		idp.SetDefault(e.resp)
		for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
			tenants = append(tenants, broker.Tenant{Name: fmt.Sprintf("echo-%d-%d", i, style),
				TokenURL: idp.TokenURL(), ClientID: id,
				ClientSecret: creds.Secret(faultidp.RedTeamSecret), AuthStyle: style})
		}
	}

	textLogs, jsonLogs := &logtest.Buffer{}, &logtest.Buffer{}
	log := slog.New(slog.NewMultiHandler(
		slog.NewTextHandler(textLogs, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewJSONHandler(jsonLogs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	b, err := broker.New(broker.Config{Tenants: tenants, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := server.New(server.Config{Broker: b, Logger: log})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.GRPC.Serve(lis) }()
	defer func() { shutdown(t, srv); <-served }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := tbv1.NewTokenBrokerServiceClient(cc)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	outputs := map[string]string{}
	for _, tn := range tenants {
		_, err := api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: tn.Name})
		if err == nil {
			t.Fatalf("%s: GetToken succeeded", tn.Name)
		}
		outputs["gRPC error of "+tn.Name] = status.Convert(err).Message()
	}
	list, err := api.ListTenants(ctx, &tbv1.ListTenantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range list.GetTenants() {
		outputs["last_error of "+tn.GetName()] = tn.GetStatus().GetLastError()
	}
	outputs["text logs"], outputs["JSON logs"] = textLogs.String(), jsonLogs.String()

	if got := outputs["gRPC error of echo-0-1"]; !strings.Contains(got, "(description withheld)") {
		t.Fatalf("gRPC error %q, want the description withheld", got)
	}
	if got := outputs["last_error of "+tenants[len(tenants)-1].Name]; !strings.Contains(got, "malformed HTTP response") {
		t.Fatalf("last_error %q, want a malformed HTTP response named", got)
	}
	assertNoSecretForms(t, outputs, id, faultidp.RedTeamSecret)
}

func assertNoSecretForms(t *testing.T, outputs map[string]string, id, secret string) {
	t.Helper()
	forms := faultidp.SecretForms(id, secret)
	for where, out := range outputs {
		low := strings.ToLower(out)
		for _, f := range forms {
			if strings.Contains(low, strings.ToLower(f)) {
				t.Errorf("%s contains the secret form %q: %s", where, f, out)
			}
		}
	}
}

// The same echoes through the whole daemon (TLS, callers, audit file):
// the audit reason of the failed GetToken, the JSON logs and the errors
// carry no form of the secret.
func TestEncodedIdPEchoNeverReachesTheAuditTrail(t *testing.T) {
	s := brokertest.StartSecured(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	api := s.API(s.WithCert(brokertest.BillingSPIFFE))
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(s.Dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("idp.secret", faultidp.RedTeamSecret+"\n")
	outputs := map[string]string{}
	for i, e := range append(faultidp.Encodings, faultidp.Encoding{Name: "malformed"}) {
		idp := faultidp.Start()
		defer idp.Close()
		if e.Encode == nil {
			idp.SetDefault(faultidp.MalformedEcho())
		} else {
			idp.SetDefault(faultidp.EchoEncoded(401, e.Encode))
		}
		s.WriteConfig(fmt.Sprintf(brokertest.SecuredConfig, idp.TokenURL(), "rt7client", brokertest.SHA256Hex(s.APIKey)))
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, api, "acme"); err == nil {
			t.Fatalf("%s: GetToken succeeded", e.Name)
		} else {
			outputs[fmt.Sprintf("gRPC error %d (%s)", i, e.Name)] = err.Error()
		}
	}
	var reasons []string
	for _, r := range s.AuditRecords() {
		reasons = append(reasons, r.Reason)
	}
	outputs["audit reasons"] = strings.Join(reasons, "\n")
	outputs["logs"] = s.Logs.String()
	if !strings.Contains(outputs["audit reasons"], "(description withheld)") ||
		!strings.Contains(outputs["audit reasons"], "malformed HTTP response") {
		t.Fatalf("audit reasons do not record the failures:\n%s", outputs["audit reasons"])
	}
	raw, err := os.ReadFile(s.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	outputs["audit file"] = string(raw)
	assertNoSecretForms(t, outputs, "rt7client", faultidp.RedTeamSecret)
}
