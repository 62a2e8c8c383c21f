package daemon_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/fulldisk"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

const auditHealthConfig = `listen: 127.0.0.1:0
tenants:
  - name: steady
    token_url: %[1]s
    client_id: steady
    client_secret_file: idp.secret
  - name: late
    token_url: %[2]s
    client_id: late
    client_secret_file: idp.secret
audit:
  path: audit.log
`

// TestAuditFullDiskHoldsTenantHealth (issue 19 §3): while the audit file
// cannot grow (RLIMIT_FSIZE: the kernel cuts the write and fails it with
// EFBIG, as a full disk does with ENOSPC), every token call fails, so
// health "" and each "tenant/<name>" are NOT_SERVING, also for a tenant
// that gets its first token meanwhile; once the file can grow, each
// tenant is back to what it is then. The cut line is not left in the
// file: every line of the trail is a whole record.
func TestAuditFullDiskHoldsTenantHealth(t *testing.T) {
	steady, late := faultidp.Start(), faultidp.Start()
	defer steady.Close()
	defer late.Close()
	late.SetDefault(faultidp.OAuthError(503, "temporarily_unavailable", ""))
	dir := t.TempDir()
	testpki.WriteFile(t, filepath.Join(dir, "idp.secret"), []byte("FAKE-audit-secret\n"))
	cfg := filepath.Join(dir, "broker.yaml")
	testpki.WriteFile(t, cfg, fmt.Appendf(nil, auditHealthConfig, steady.TokenURL(), late.TokenURL()))
	d := runFile(t, cfg, &logtest.Buffer{}, &logtest.Buffer{})
	cc, err := grpc.NewClient(d.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := t.Context()
	api, probe := tbv1.NewTokenBrokerServiceClient(cc), healthpb.NewHealthClient(cc)
	health := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		r, err := probe.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("Check(%q): %v", svc, err)
		}
		return r.GetStatus()
	}
	want := func(when string, statuses map[string]healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for svc, w := range statuses {
			if got := health(svc); got != w {
				t.Errorf("%s: health %q = %v, want %v", when, svc, got, w)
			}
		}
	}
	get := func(tenant string) error {
		_, err := api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: tenant})
		return err
	}
	isAuditError := func(err error) bool {
		return status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "audit trail")
	}

	eventually(t, "tenant/steady SERVING", func() bool { return health("tenant/steady") == healthpb.HealthCheckResponse_SERVING })
	if err := get("steady"); err != nil {
		t.Fatal(err)
	}
	want("audit writable", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": healthpb.HealthCheckResponse_SERVING, "tenant/steady": healthpb.HealthCheckResponse_SERVING,
		"tenant/late": healthpb.HealthCheckResponse_NOT_SERVING})

	auditPath := filepath.Join(dir, "audit.log")
	fi, err := os.Stat(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	// Room for 20 bytes: the next line is cut there and its write fails.
	lift := fulldisk.Limit(t, fi.Size()+20)
	if err := get("steady"); !isAuditError(err) {
		t.Fatalf("GetToken while the audit file cannot grow: %v, want UNAVAILABLE naming the audit trail", err)
	}
	want("audit failing", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": healthpb.HealthCheckResponse_NOT_SERVING, "tenant/steady": healthpb.HealthCheckResponse_NOT_SERVING,
		"tenant/late": healthpb.HealthCheckResponse_NOT_SERVING})

	// late's IdP comes back: the broker gets its token (a call fails on
	// the audit line only once the token is there), health stays down.
	late.SetDefault(faultidp.OK("late-token", 3600))
	deadline := time.Now().Add(30 * time.Second)
	for err := get("late"); !isAuditError(err); err = get("late") {
		if time.Now().After(deadline) {
			t.Fatalf("GetToken(late) after its IdP recovered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	want("audit failing, late has a token", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"tenant/late": healthpb.HealthCheckResponse_NOT_SERVING})

	lift()
	if err := get("steady"); err != nil { // its line succeeds: the trail is back
		t.Fatalf("GetToken once the audit file can grow: %v", err)
	}
	want("audit recovered", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": healthpb.HealthCheckResponse_SERVING, "tenant/steady": healthpb.HealthCheckResponse_SERVING,
		"tenant/late": healthpb.HealthCheckResponse_SERVING})
	if err := get("late"); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	var issued []string
	gaps := 0
	for i, ln := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			t.Errorf("audit line %d is not a whole record: %q", i+1, ln)
			continue
		}
		switch r.Event {
		case audit.EventIssue:
			issued = append(issued, r.Tenant)
		case audit.EventGap:
			gaps++
		}
	}
	if strings.Join(issued, ",") != "steady,steady,late" || gaps != 1 {
		t.Errorf("audit trail: issue lines for %q and %d audit_gap lines; want steady,steady,late and 1", issued, gaps)
	}
}
