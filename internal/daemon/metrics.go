package daemon

import (
	"context"
	"errors"
	"strconv"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
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
	grpc        *grpcprom.ServerMetrics
	refreshes   *prometheus.CounterVec
	idp         *prometheus.HistogramVec
	reloads     *prometheus.CounterVec
	denials     *prometheus.CounterVec
	auditErrors prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.0005, .001, .005, .01, .05, .1, .5, 1, 5, 10, 30}),
		)),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_token_refreshes_total",
			Help: "Token requests to identity providers (refreshes and first fetches, every scope set), by tenant and result: success, error (transient, retried) or rejected (permanent, e.g. invalid_client).",
		}, []string{"tenant", "result"}),
		idp: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenbroker_idp_request_duration_seconds",
			Help:    "Duration of token requests to identity providers, by tenant and HTTP status (\"error\" when no response arrived). A rotation's fallback credentials count as one request.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"tenant", "status"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_config_reloads_total",
			Help: "Configuration reloads, by result: success or error (the running configuration was kept).",
		}, []string{"result"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_denials_total",
			Help: "Refused calls (the audit trail's deny events), by gRPC status code.",
		}, []string{"code"}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_audit_write_errors_total",
			Help: "Audit lines that could not be written; while writes fail, no token is handed out.",
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.grpc, m.refreshes, m.idp, m.reloads, m.denials, m.auditErrors,
	)
	for _, r := range []string{"success", "error"} {
		m.reloads.WithLabelValues(r)
	}
	return m
}

// denied counts a refused call (guard.Config.OnDenial).
func (m *metrics) denied(c codes.Code) { m.denials.WithLabelValues(c.String()).Inc() }

// reloaded counts a reload.
func (m *metrics) reloaded(err error) {
	r := "success"
	if err != nil {
		r = "error"
	}
	m.reloads.WithLabelValues(r).Inc()
}

// instrumentedFetcher counts and times a tenant's token requests.
type instrumentedFetcher struct {
	tenant string
	next   broker.Fetcher
	m      *metrics
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
	f.m.idp.WithLabelValues(f.tenant, status).Observe(time.Since(start).Seconds())
	f.m.refreshes.WithLabelValues(f.tenant, result).Inc()
	return g, err
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
