package daemon

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/server"
)

// The broker's Prometheus metrics. Labels are bounded: tenant names come
// from the configuration, results, states, codes and HTTP statuses are
// small fixed sets; scopes, callers and peers are never labels, and no
// value is derived from a token or secret. package broker knows nothing
// of Prometheus: the daemon wraps each tenant's Fetcher and reads
// broker.Tenants() on scrape.

// Refresh results of tokenbroker_token_refreshes_total.
const (
	resultSuccess = "success"
	// resultError: a transient failure (IdP down, 5xx, 429, timeout…),
	// retried with backoff.
	resultError = "error"
	// resultRejected: a permanent failure (invalid_client,
	// unauthorized_client, invalid_scope), retried only slowly.
	resultRejected = "rejected"
)

// metrics holds the daemon's registry and its own collectors.
type metrics struct {
	reg         *prometheus.Registry
	grpc        *grpcMetrics
	idp         *idpCollector
	reloads     *prometheus.CounterVec
	denials     *prometheus.CounterVec
	auditErrors prometheus.Counter
	oauth       *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg:  prometheus.NewRegistry(),
		grpc: newGRPCMetrics(),
		idp:  &idpCollector{byTenant: map[string]*idpStats{}},
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_config_reloads_total",
			Help: "Configuration reloads (SIGHUP, Reload or a changed file), by result: success, error (the file or a tenant's file did not load; the running configuration was kept) or rejected (the change would lower the security; it needs a restart).",
		}, []string{"result"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_denials_total",
			Help: "Refused calls (the audit trail's deny events), by gRPC status code.",
		}, []string{"code"}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_audit_write_errors_total",
			Help: "Audit lines that could not be written; while writes fail, no token is handed out.",
		}),
		oauth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_oauth_requests_total",
			Help: "Requests to the OAuth2 token endpoint (oauth.listen), by result: ok or the RFC 6749 error answered (invalid_request, invalid_client, unauthorized_client, unsupported_grant_type, invalid_scope, temporarily_unavailable, server_error).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.grpc, m.idp, m.reloads, m.denials, m.auditErrors, m.oauth,
	)
	for _, r := range []string{"success", "error", "rejected"} {
		m.reloads.WithLabelValues(r)
	}
	return m
}

// grpcMetrics are go-grpc-middleware's gRPC server metrics (its
// providers/prometheus: the same names, labels and help), counted
// through series looked up once per method (server.Metrics) instead of
// by label values on every call, which hashed four strings and allocated
// their slice per series per call.
type grpcMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
	seconds                          *prometheus.HistogramVec
}

func newGRPCMetrics() *grpcMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	return &grpcMetrics{
		started:  counter("grpc_server_started_total", "Total number of RPCs started on the server.", labels...),
		handled:  counter("grpc_server_handled_total", "Total number of RPCs completed on the server, regardless of success or failure.", append(labels, "grpc_code")...),
		received: counter("grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.", labels...),
		sent:     counter("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", labels...),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .5, 1, 5, 10, 30},
		}, labels),
	}
}

func (m *grpcMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range []prometheus.Collector{m.started, m.handled, m.received, m.sent, m.seconds} {
		c.Describe(ch)
	}
}

func (m *grpcMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range []prometheus.Collector{m.started, m.handled, m.received, m.sent, m.seconds} {
		c.Collect(ch)
	}
}

// Method implements server.Metrics: every series of the method, every
// code's included, exists from the start (as go-grpc-middleware's
// InitializeMetrics made them).
func (m *grpcMetrics) Method(service, method, typ string) server.MethodMetrics {
	mm := &methodMetrics{
		started:  m.started.WithLabelValues(typ, service, method),
		received: m.received.WithLabelValues(typ, service, method),
		sent:     m.sent.WithLabelValues(typ, service, method),
		seconds:  m.seconds.WithLabelValues(typ, service, method),
		handled:  m.handled.MustCurryWith(prometheus.Labels{"grpc_type": typ, "grpc_service": service, "grpc_method": method}),
	}
	for c := range mm.byCode {
		mm.byCode[c] = mm.handled.WithLabelValues(codes.Code(c).String())
	}
	return mm
}

// methodMetrics are one method's series.
type methodMetrics struct {
	started, received, sent prometheus.Counter
	seconds                 prometheus.Observer
	byCode                  [codes.Unauthenticated + 1]prometheus.Counter // every code gRPC defines
	handled                 *prometheus.CounterVec                        // curried: by code
}

func (m *methodMetrics) Started()  { m.started.Inc() }
func (m *methodMetrics) Received() { m.received.Inc() }
func (m *methodMetrics) Sent()     { m.sent.Inc() }

func (m *methodMetrics) Handled(code codes.Code, d time.Duration) {
	if int(code) < len(m.byCode) {
		m.byCode[code].Inc()
	} else {
		m.handled.WithLabelValues(code.String()).Inc()
	}
	m.seconds.Observe(d.Seconds())
}

// oauthResult counts a token endpoint request (oauth.Config.OnResult);
// its results are the fixed set the endpoint answers.
func (m *metrics) oauthResult(result string) { m.oauth.WithLabelValues(result).Inc() }

// denied counts a refused call (guard.Config.OnDenial).
func (m *metrics) denied(c codes.Code) { m.denials.WithLabelValues(c.String()).Inc() }

// instrumentedFetcher counts and times a tenant's token requests.
type instrumentedFetcher struct {
	next  broker.Fetcher
	stats *idpStats
}

func (f *instrumentedFetcher) Fetch(ctx context.Context, scopes []string) (upstream.Grant, error) {
	start := time.Now()
	g, err := f.next.Fetch(ctx, scopes)
	status, result := "200", resultSuccess
	if err != nil {
		status, result = "error", resultError
		if ue, ok := errors.AsType[*upstream.Error](err); ok {
			if ue.StatusCode != 0 {
				status = strconv.Itoa(ue.StatusCode)
			}
			if ue.Permanent {
				result = resultRejected
			}
		}
	}
	f.stats.observe(status, result, time.Since(start).Seconds())
	return g, err
}

// idpBuckets are tokenbroker_idp_request_duration_seconds' upper bounds.
var idpBuckets = [...]float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

var (
	refreshesDesc = prometheus.NewDesc("tokenbroker_token_refreshes_total",
		"Token requests to identity providers (refreshes and first fetches, every scope set), by tenant and result: success, error (transient, retried) or rejected (permanent, e.g. invalid_client).",
		[]string{"tenant", "result"}, nil)
	idpDurationDesc = prometheus.NewDesc("tokenbroker_idp_request_duration_seconds",
		"Duration of token requests to identity providers, by tenant and HTTP status (\"error\" when no response arrived). A rotation's fallback credentials count as one request.",
		[]string{"tenant", "status"}, nil)
	resultNames = [...]string{resultSuccess, resultError, resultRejected}
)

// idpCollector reports every tenant's token requests: the refresh
// counter and the IdP latency histogram. It keeps the figures in a few
// words per tenant and builds the series on scrape, because a
// CounterVec and HistogramVec child per tenant cost ~1.9 KiB, a third of
// an idle tenant's memory at 10,000 tenants. Figures are kept by tenant
// name, so they survive a reload that rebuilds the tenant's fetcher, and
// dropped when a reload removes the tenant (retain).
type idpCollector struct {
	mu       sync.Mutex
	byTenant map[string]*idpStats
}

// stats returns tenant's figures, creating them.
func (c *idpCollector) stats(tenant string) *idpStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.byTenant[tenant]
	if s == nil {
		s = &idpStats{tenant: tenant}
		c.byTenant[tenant] = s
	}
	return s
}

// retain forgets the figures of every tenant keep rejects.
func (c *idpCollector) retain(keep func(tenant string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.byTenant {
		if !keep(name) {
			delete(c.byTenant, name)
		}
	}
}

func (c *idpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- refreshesDesc
	ch <- idpDurationDesc
}

func (c *idpCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	all := make([]*idpStats, 0, len(c.byTenant))
	for _, s := range c.byTenant {
		all = append(all, s)
	}
	c.mu.Unlock()
	for _, s := range all {
		s.collect(ch)
	}
}

// idpStats is one tenant's figures.
type idpStats struct {
	tenant  string
	mu      sync.Mutex
	results [len(resultNames)]uint64
	// byStatus has one entry per HTTP status seen, usually one ("200").
	byStatus []statusHistogram
}

type statusHistogram struct {
	status  string
	count   uint64
	sum     float64
	buckets [len(idpBuckets)]uint64 // per bucket, not cumulative
}

func (s *idpStats) observe(status, result string, seconds float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range resultNames {
		if r == result {
			s.results[i]++
		}
	}
	i := 0
	for i < len(s.byStatus) && s.byStatus[i].status != status {
		i++
	}
	if i == len(s.byStatus) {
		s.byStatus = append(s.byStatus, statusHistogram{status: status})
	}
	h := &s.byStatus[i]
	h.count++
	h.sum += seconds
	if b := sort.SearchFloat64s(idpBuckets[:], seconds); b < len(idpBuckets) {
		h.buckets[b]++ // the first bound >= seconds: Prometheus' le
	}
}

func (s *idpStats) collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, n := range s.results {
		if n > 0 {
			ch <- prometheus.MustNewConstMetric(refreshesDesc, prometheus.CounterValue, float64(n), s.tenant, resultNames[i])
		}
	}
	for _, h := range s.byStatus {
		cum := make(map[float64]uint64, len(idpBuckets))
		var run uint64
		for i, ub := range idpBuckets {
			run += h.buckets[i]
			cum[ub] = run
		}
		ch <- prometheus.MustNewConstHistogram(idpDurationDesc, h.count, h.sum, cum, s.tenant, h.status)
	}
}

// tenantCollector reports each tenant's default-scope token state on
// scrape, from broker.Tenants(), so that removed tenants disappear.
type tenantCollector struct {
	tenants func() []broker.TenantInfo
}

var (
	expiryDesc = prometheus.NewDesc("tokenbroker_token_expiry_timestamp_seconds",
		"Expiry (Unix time) of the tenant's cached default-scope token; absent while none is cached.",
		[]string{"tenant"}, nil)
	stateDesc = prometheus.NewDesc("tokenbroker_token_state",
		"State of the tenant's default-scope token: 1 for the current state (pending, ready, stale, failing), 0 for the others.",
		[]string{"tenant", "state"}, nil)
	watchesDesc = prometheus.NewDesc("tokenbroker_watch_streams",
		"Open WatchToken streams (broker watches) over all the tenant's scope sets.",
		[]string{"tenant"}, nil)
	scopeSetsDesc = prometheus.NewDesc("tokenbroker_scope_sets",
		"Scope sets the broker holds for the tenant, its default set included.",
		[]string{"tenant"}, nil)
	states = []broker.State{broker.StatePending, broker.StateReady, broker.StateStale, broker.StateFailing}
)

func (c tenantCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiryDesc
	ch <- stateDesc
	ch <- watchesDesc
	ch <- scopeSetsDesc
}

func (c tenantCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.tenants() {
		if !t.Expiry.IsZero() {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(t.Expiry.UnixMilli())/1000, t.Name)
		}
		for _, s := range states {
			v := 0.0
			if t.Status.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, v, t.Name, s.String())
		}
		ch <- prometheus.MustNewConstMetric(watchesDesc, prometheus.GaugeValue, float64(t.Watches), t.Name)
		ch <- prometheus.MustNewConstMetric(scopeSetsDesc, prometheus.GaugeValue, float64(t.ScopeSets), t.Name)
	}
}
