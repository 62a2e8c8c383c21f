package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// adminGet GETs path on d's admin listener and returns status and body.
func adminGet(t *testing.T, d *daemon.Daemon, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + d.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// eventually polls cond every 10 ms for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue returns the value of the sample line starting with series
// (name{labels} in exposition order) in a scrape, or -1.
func metricValue(scrape, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(scrape)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// withBrokenTenant is the secured config plus tenant "broken", whose
// identity provider rejects the client (invalid_client).
func withBrokenTenant(s *brokertest.Secured, tokenURL string) string {
	return strings.Replace(fmt.Sprintf(brokertest.SecuredConfig, s.IdP.TokenURL(), s.Client.ID, brokertest.SHA256Hex(s.APIKey)),
		"callers:", "  - name: broken\n    token_url: "+tokenURL+"\n    client_id: broken-client\n    client_secret_file: idp.secret\ncallers:", 1)
}

// TestMetricsAfterRefreshFailureAndDenial scrapes /metrics over HTTP
// after tokens were fetched (acme, team-a, hidden), a tenant added by a
// reload failed permanently (broken: invalid_client) and two calls were
// denied, and checks the values an operator alerts on, the gRPC and Go
// runtime metrics, /healthz and /readyz, and that no secret, token or
// API key appears anywhere in the scrape.
func TestMetricsAfterRefreshFailureAndDenial(t *testing.T) {
	s := brokertest.StartSecured(t)
	d := s.Daemon
	idp := faultidp.Start()
	defer idp.Close()
	idp.SetDefault(faultidp.OAuthError(401, "invalid_client", "Client authentication failed"))

	if code, body := adminGet(t, d, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	// A token (a cache hit after the start-up fetch) and two denials.
	api := s.API(s.WithCert(brokertest.BillingSPIFFE))
	if _, err := s.Get(t.Context(), api, "acme"); err != nil {
		t.Fatal(err)
	}
	// An open watch on a second scope set of acme.
	watchCtx, stopWatch := context.WithCancel(t.Context())
	defer stopWatch()
	watch, err := api.WatchToken(watchCtx, &tbv1.WatchTokenRequest{Tenant: "acme", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil {
		t.Fatal(err)
	}
	s.Record(first.GetToken(), nil)
	_, err = s.Get(t.Context(), api, "hidden")
	brokertest.WantStatus(t, "billing asks for hidden", err, codes.PermissionDenied)
	_, err = s.Get(brokertest.Bearer(t.Context(), s.WrongKey), s.API(s.TLSOnly()), "team-a")
	brokertest.WantStatus(t, "a wrong API key", err, codes.Unauthenticated)
	// A reload adds a tenant whose IdP rejects it.
	s.WriteConfig(withBrokenTenant(s, idp.TokenURL()))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + d.AdminAddr().String() + "/metrics"
	eventually(t, "the broken tenant's failure", func() bool {
		_, body := adminGet(t, d, "/metrics")
		return metricValue(body, `tokenbroker_token_state{state="failing",tenant="broken"}`) == 1
	})

	if err := testutil.ScrapeAndCompare(url, strings.NewReader(`
# HELP tokenbroker_token_refreshes_total Token requests to identity providers (refreshes and first fetches, every scope set), by tenant and result: success, error (transient, retried) or rejected (permanent, e.g. invalid_client).
# TYPE tokenbroker_token_refreshes_total counter
tokenbroker_token_refreshes_total{result="rejected",tenant="broken"} 1
tokenbroker_token_refreshes_total{result="success",tenant="acme"} 2
tokenbroker_token_refreshes_total{result="success",tenant="hidden"} 1
tokenbroker_token_refreshes_total{result="success",tenant="team-a"} 1
# HELP tokenbroker_denials_total Refused calls (the audit trail's deny events), by gRPC status code.
# TYPE tokenbroker_denials_total counter
tokenbroker_denials_total{code="PermissionDenied"} 1
tokenbroker_denials_total{code="Unauthenticated"} 1
# HELP tokenbroker_config_reloads_total Configuration reloads (SIGHUP, Reload or a changed file), by result: success, error (the file or a tenant's file did not load; the running configuration was kept) or rejected (the change would lower the security; it needs a restart).
# TYPE tokenbroker_config_reloads_total counter
tokenbroker_config_reloads_total{result="error"} 0
tokenbroker_config_reloads_total{result="rejected"} 0
tokenbroker_config_reloads_total{result="success"} 1
# HELP tokenbroker_audit_write_errors_total Audit lines that could not be written; while writes fail, no token is handed out.
# TYPE tokenbroker_audit_write_errors_total counter
tokenbroker_audit_write_errors_total 0
`), "tokenbroker_token_refreshes_total", "tokenbroker_denials_total", "tokenbroker_config_reloads_total", "tokenbroker_audit_write_errors_total"); err != nil {
		t.Error(err)
	}

	_, scrape := adminGet(t, d, "/metrics")
	now := float64(time.Now().Unix())
	for _, tc := range []struct {
		series   string
		min, max float64
	}{
		{`tokenbroker_idp_request_duration_seconds_count{status="200",tenant="acme"}`, 2, 2},
		{`tokenbroker_idp_request_duration_seconds_count{status="401",tenant="broken"}`, 1, 1},
		{`tokenbroker_token_state{state="ready",tenant="acme"}`, 1, 1},
		{`tokenbroker_scope_sets{tenant="acme"}`, 2, 2},
		{`tokenbroker_watch_streams{tenant="acme"}`, 1, 1},
		{`tokenbroker_watch_streams{tenant="team-a"}`, 0, 0},
		{`tokenbroker_token_state{state="failing",tenant="acme"}`, 0, 0},
		{`tokenbroker_token_state{state="failing",tenant="broken"}`, 1, 1},
		{`tokenbroker_token_expiry_timestamp_seconds{tenant="acme"}`, now, now + 24*3600},
		{`grpc_server_handled_total{grpc_code="OK",grpc_method="GetToken",grpc_service="tokenbroker.v1.TokenBrokerService",grpc_type="unary"}`, 1, 1},
		{`grpc_server_handled_total{grpc_code="PermissionDenied",grpc_method="GetToken",grpc_service="tokenbroker.v1.TokenBrokerService",grpc_type="unary"}`, 1, 1},
		// The wrong key is refused when its stream opens, before gRPC's
		// handler metrics see a call; tokenbroker_denials_total counts it.
		{`grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="GetToken",grpc_service="tokenbroker.v1.TokenBrokerService",grpc_type="unary"}`, 0, 0},
		{`grpc_server_handling_seconds_count{grpc_method="GetToken",grpc_service="tokenbroker.v1.TokenBrokerService",grpc_type="unary"}`, 2, 2},
		{`go_goroutines`, 1, 1e6},
		{`process_open_fds`, 1, 1e6},
	} {
		if v := metricValue(scrape, tc.series); v < tc.min || v > tc.max {
			t.Errorf("%s = %g, want [%g, %g]", tc.series, v, tc.min, tc.max)
		}
	}
	if strings.Contains(scrape, `tenant="broken"`) && strings.Contains(scrape, "tokenbroker_token_expiry_timestamp_seconds{tenant=\"broken\"}") {
		t.Error("a tenant without a token has an expiry")
	}
	// The broken tenant failed permanently: it does not hold readiness back.
	if code, body := adminGet(t, d, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q, want 200", code, body)
	}

	tokens, errs := s.Seen()
	needles := map[string]string{
		"client secret": s.Client.Secret, "API key": s.APIKey, "wrong API key": s.WrongKey,
		"API key digest": brokertest.SHA256Hex(s.APIKey), "peer port": strings.Split(s.Addr, ":")[1] + `"`,
	}
	for i, tok := range tokens {
		needles[fmt.Sprintf("token %d", i)] = tok
	}
	for i, f := range faultidp.SecretForms(s.Client.ID, s.Client.Secret) {
		needles[fmt.Sprintf("secret form %d", i)] = f
	}
	logtest.AssertNone(t, map[string]string{"metrics": scrape}, needles)
	if len(errs) != 2 {
		t.Errorf("errors seen: %d, want 2", len(errs))
	}
	t.Logf("/metrics excerpt:\n%s", excerpt(scrape, "tokenbroker_", `grpc_server_handled_total{grpc_code="OK",grpc_method="GetToken"`, `grpc_server_handled_total{grpc_code="PermissionDenied",grpc_method="GetToken"`, `grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="GetToken"`))
}

// excerpt returns the scrape's sample lines that start with one of
// prefixes, histogram buckets left out.
func excerpt(scrape string, prefixes ...string) string {
	var b strings.Builder
	for ln := range strings.Lines(scrape) {
		for _, p := range prefixes {
			if strings.HasPrefix(ln, p) && !strings.Contains(ln, "_bucket{") {
				b.WriteString(ln)
				break
			}
		}
	}
	return b.String()
}

// TestDrainSequence cancels Run's context (SIGTERM in the binary) with
// a watch stream open and a call waiting on a hanging identity provider,
// and checks the order and timing of the shutdown: health and /readyz
// NOT_SERVING at once, calls still served during shutdown.drain, then the
// watch ends UNAVAILABLE, and after shutdown.timeout the hanging call ends
// with a clean UNAVAILABLE status, not a transport error.
func TestDrainSequence(t *testing.T) {
	const drain, timeout = 400 * time.Millisecond, 400 * time.Millisecond
	client := devidp.NewClient()
	good, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	hang := faultidp.Start()
	defer hang.Close()
	hang.Push(faultidp.OK("hang-default-token", 3600)) // the default scope set's token
	hang.SetDefault(faultidp.Response{Hang: true})     // every other request hangs
	cfg := &config.Config{
		Listen: "127.0.0.1:0",
		Tenants: []config.Tenant{
			{Name: "good", TokenURL: good.TokenURL(), ClientID: client.ID, ClientSecret: creds.Secret(client.Secret), AuthStyle: config.AuthStyleBody},
			{Name: "hang", TokenURL: hang.TokenURL(), ClientID: "hang-client", ClientSecret: "FAKE-hang-secret", AuthStyle: config.AuthStyleBody},
		},
		Admin:    config.Admin{Listen: "127.0.0.1:0"},
		Shutdown: config.Shutdown{Drain: drain, Timeout: timeout},
	}
	logs := &logtest.Buffer{}
	d, err := daemon.New(cfg, daemon.Options{Logger: jsonLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	cc, err := grpc.NewClient(d.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := tbv1.NewTokenBrokerServiceClient(cc)
	health := healthpb.NewHealthClient(cc)
	eventually(t, "/readyz 200", func() bool { code, _ := adminGet(t, d, "/readyz"); return code == 200 })

	watch, err := api.WatchToken(t.Context(), &tbv1.WatchTokenRequest{Tenant: "good"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	hung := make(chan error, 1)
	go func() {
		_, err := api.GetToken(context.Background(), &tbv1.GetTokenRequest{Tenant: "hang", Scopes: []string{"slow"}})
		hung <- err
	}()
	eventually(t, "the hanging IdP request", func() bool { return hang.InFlight() == 1 })

	var steps []string
	start := time.Now()
	step := func(format string, args ...any) time.Duration {
		el := time.Since(start)
		steps = append(steps, fmt.Sprintf("%7s  %s", el.Round(time.Millisecond), fmt.Sprintf(format, args...)))
		return el
	}
	stop() // SIGTERM
	step("Run's context cancelled (SIGTERM)")
	eventually(t, "health NOT_SERVING", func() bool {
		r, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if el := step("gRPC health \"\" NOT_SERVING"); el >= drain {
		t.Errorf("health turned NOT_SERVING after %s, want at once", el)
	}
	code, body := adminGet(t, d, "/readyz")
	if el := step("/readyz %d %q", code, strings.TrimSpace(body)); code != 503 || el >= drain {
		t.Errorf("/readyz = %d %q after %s, want 503 at once", code, body, el)
	}
	if _, err := api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "good"}); err != nil {
		t.Errorf("GetToken during the drain: %v", err)
	}
	if el := step("GetToken during the drain: OK"); el >= drain {
		t.Errorf("the drain check ran after %s, too late to prove anything", el)
	}

	_, err = watch.Recv()
	el := step("WatchToken ended: %s", status.Code(err))
	if status.Code(err) != codes.Unavailable || el < drain {
		t.Errorf("watch ended %v after %s, want UNAVAILABLE after the %s drain", err, el, drain)
	}
	err = <-hung
	el = step("GetToken waiting on the hanging IdP ended: %s %q", status.Code(err), status.Convert(err).Message())
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "shutting down") || el < drain+timeout {
		t.Errorf("hanging call ended %v after %s, want a clean UNAVAILABLE after drain+timeout (%s)", err, el, drain+timeout)
	}
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if el := step("Run returned"); el > drain+timeout+3*time.Second {
		t.Errorf("Run returned after %s, want about drain+timeout (%s)", el, drain+timeout)
	}
	t.Logf("drain sequence (drain %s, timeout %s):\n%s\ndaemon log:\n%s", drain, timeout, strings.Join(steps, "\n"), drainLog(logs.String()))
}

// drainLog keeps the daemon's shutdown lines.
func drainLog(logs string) string {
	var b strings.Builder
	for ln := range strings.Lines(logs) {
		if strings.Contains(ln, "shutting down") || strings.Contains(ln, "drain over") || strings.Contains(ln, "in-flight") || strings.Contains(ln, "stopped") {
			b.WriteString(ln)
		}
	}
	return b.String()
}

// TestAdminServesStatusPage: the admin listener's "/" is the status page
// of the running broker (every tenant, its state) and /status.json its
// data, with the page's strict Content-Security-Policy, and neither shows
// a token, a client secret or an API key.
func TestAdminServesStatusPage(t *testing.T) {
	s := brokertest.StartSecured(t)
	d := s.Daemon
	tok, err := s.Get(t.Context(), s.API(s.WithCert(brokertest.BillingSPIFFE)), "acme")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + d.AdminAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("GET / = %d, CSP %q; want 200 with the status page's CSP", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	code, data := adminGet(t, d, "/status.json")
	if code != 200 {
		t.Errorf("GET /status.json = %d", code)
	}
	for _, tenant := range []string{"acme", "team-a", "hidden"} {
		if !strings.Contains(string(page), tenant) || !strings.Contains(data, `"`+tenant+`"`) {
			t.Errorf("status page or JSON does not show tenant %s", tenant)
		}
	}
	for what, secret := range map[string]string{"token": tok.GetAccessToken(), "client secret": s.Client.Secret, "API key": s.APIKey, "client id": s.Client.ID} {
		if strings.Contains(string(page), secret) || strings.Contains(data, secret) {
			t.Errorf("the status page shows the %s", what)
		}
	}
}
