package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
)

// TestIDPCollectorExposition: the compact per-tenant figures expose the
// same series a CounterVec and a HistogramVec would: a bound is "less
// than or equal" (0.05 s lands in le="0.05"), buckets are cumulative,
// only results that happened appear, and a tenant's figures survive a
// rebuild of its fetcher (stats by name).
func TestIDPCollectorExposition(t *testing.T) {
	c := &idpCollector{byTenant: map[string]*idpStats{}}
	acme := c.stats("acme")
	acme.observe("200", resultSuccess, 0.05)
	acme.observe("200", resultSuccess, 0.2)
	c.stats("acme").observe("503", resultError, 40) // a rebuilt fetcher; beyond the last bound
	c.stats("broken").observe("401", resultRejected, 0.001)

	want := `
# HELP tokenbroker_idp_request_duration_seconds Duration of token requests to identity providers, by tenant and HTTP status ("error" when no response arrived). A rotation's fallback credentials count as one request.
# TYPE tokenbroker_idp_request_duration_seconds histogram
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="0.01"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="0.025"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="0.05"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="0.1"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="0.25"} 2
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="0.5"} 2
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="1"} 2
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="2.5"} 2
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="5"} 2
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="10"} 2
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="30"} 2
tokenbroker_idp_request_duration_seconds_bucket{status="200",tenant="acme",le="+Inf"} 2
tokenbroker_idp_request_duration_seconds_sum{status="200",tenant="acme"} 0.25
tokenbroker_idp_request_duration_seconds_count{status="200",tenant="acme"} 2
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="0.01"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="0.025"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="0.05"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="0.1"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="0.25"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="0.5"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="1"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="2.5"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="5"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="10"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="30"} 0
tokenbroker_idp_request_duration_seconds_bucket{status="503",tenant="acme",le="+Inf"} 1
tokenbroker_idp_request_duration_seconds_sum{status="503",tenant="acme"} 40
tokenbroker_idp_request_duration_seconds_count{status="503",tenant="acme"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="0.01"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="0.025"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="0.05"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="0.1"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="0.25"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="0.5"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="1"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="2.5"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="5"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="10"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="30"} 1
tokenbroker_idp_request_duration_seconds_bucket{status="401",tenant="broken",le="+Inf"} 1
tokenbroker_idp_request_duration_seconds_sum{status="401",tenant="broken"} 0.001
tokenbroker_idp_request_duration_seconds_count{status="401",tenant="broken"} 1
# HELP tokenbroker_token_refreshes_total Token requests to identity providers (refreshes and first fetches, every scope set), by tenant and result: success, error (transient, retried) or rejected (permanent, e.g. invalid_client).
# TYPE tokenbroker_token_refreshes_total counter
tokenbroker_token_refreshes_total{result="error",tenant="acme"} 1
tokenbroker_token_refreshes_total{result="rejected",tenant="broken"} 1
tokenbroker_token_refreshes_total{result="success",tenant="acme"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestIDPCollectorForgetsRemovedTenants (red team, issue 11): a tenant a
// reload removed has no IdP series left; the others keep theirs.
func TestIDPCollectorForgetsRemovedTenants(t *testing.T) {
	c := &idpCollector{byTenant: map[string]*idpStats{}}
	c.stats("acme").observe("200", resultSuccess, 0.1)
	c.stats("gone").observe("200", resultSuccess, 0.1)
	c.retain(func(tenant string) bool { return tenant == "acme" })
	want := `
# HELP tokenbroker_token_refreshes_total Token requests to identity providers (refreshes and first fetches, every scope set), by tenant and result: success, error (transient, retried) or rejected (permanent, e.g. invalid_client).
# TYPE tokenbroker_token_refreshes_total counter
tokenbroker_token_refreshes_total{result="success",tenant="acme"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "tokenbroker_token_refreshes_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "tokenbroker_idp_request_duration_seconds"); n != 1 {
		t.Errorf("%d latency histograms after the removal, want acme's only", n)
	}
}

// TestGRPCMetricsPerCall: a call's counting allocates nothing (its
// series were looked up when the method was), and the series keep
// go-grpc-middleware's names and labels, every code's handled series
// there from the start.
func TestGRPCMetricsPerCall(t *testing.T) {
	m := newGRPCMetrics()
	mm := m.Method("tokenbroker.v1.TokenBrokerService", "GetToken", "unary")
	if n := testing.AllocsPerRun(100, func() {
		mm.Started()
		mm.Received()
		mm.Sent()
		mm.Handled(codes.OK, time.Millisecond)
		mm.Handled(codes.PermissionDenied, time.Millisecond)
	}); n != 0 {
		t.Errorf("a call's metrics allocate %v times, want 0", n)
	}
	mm.Handled(codes.Code(99), time.Millisecond) // no such code: counted all the same
	for _, c := range []struct {
		code string
		want float64
	}{{"OK", 101}, {"PermissionDenied", 101}, {"Code(99)", 1}, {"Unauthenticated", 0}} {
		if got := testutil.ToFloat64(m.handled.WithLabelValues("unary", "tokenbroker.v1.TokenBrokerService", "GetToken", c.code)); got != c.want {
			t.Errorf("grpc_server_handled_total{grpc_code=%q} = %v, want %v", c.code, got, c.want)
		}
	}
	if got := testutil.ToFloat64(m.started.WithLabelValues("unary", "tokenbroker.v1.TokenBrokerService", "GetToken")); got != 101 {
		t.Errorf("grpc_server_started_total = %v, want 101", got)
	}
	if n := testutil.CollectAndCount(m, "grpc_server_handled_total"); n != 18 {
		t.Errorf("%d handled series, want 18: every code gRPC defines and the unknown one", n)
	}
}
