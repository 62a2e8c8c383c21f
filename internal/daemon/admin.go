package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/statuspage"
)

// The admin listener: plain HTTP, apart from the gRPC port, for probes,
// metrics and the status page.
//
//	/healthz  200 while the process runs
//	/readyz   200 once every tenant has settled (see ready), until the
//	          drain starts or the audit trail fails; 503 otherwise
//	/metrics  Prometheus
//	/         the status page (internal/statuspage; /status.json too)

// adminServer serves the admin endpoints on its own listener.
type adminServer struct {
	lis   net.Listener
	srv   *http.Server
	ready readiness
}

// readiness decides /readyz.
type readiness struct {
	tenants  func() []broker.TenantInfo
	serving  func() bool // the gRPC health of "" (false while the audit trail fails)
	draining atomic.Bool
	settled  atomic.Bool // latched: every tenant settled once
}

// check returns whether the broker is ready and, if not, why: not
// draining, gRPC health SERVING, and every tenant settled once since start
// (README, /readyz). Readiness is not withdrawn when a tenant fails later:
// pulling every replica for one tenant's IdP outage would fail them all.
func (r *readiness) check() (bool, string) {
	if r.draining.Load() {
		return false, "draining: shutting down"
	}
	if !r.serving() {
		return false, "not serving: the audit trail cannot be written"
	}
	if r.settled.Load() {
		return true, "ready"
	}
	var waiting []string
	for _, t := range r.tenants() {
		if !settled(t) {
			waiting = append(waiting, t.Name+" ("+t.Status.State.String()+")")
		}
	}
	if len(waiting) > 0 {
		return false, "waiting for tenants: " + strings.Join(waiting, ", ")
	}
	r.settled.Store(true)
	return true, "ready"
}

// settled reports whether a tenant holds a valid token or failed
// permanently.
func settled(t broker.TenantInfo) bool {
	switch t.Status.State {
	case broker.StateReady, broker.StateStale:
		return true
	case broker.StateFailing:
		ue, ok := errors.AsType[*upstream.Error](t.Status.LastError)
		return ok && ue.Permanent
	}
	return false
}

// The admin listener's connection caps (server.LimitListener): probes and
// scrapers need a handful, and one flooding address cannot keep a probe
// from another address out.
const (
	adminMaxConns      = 64
	adminMaxConnsPerIP = 8
)

// newAdmin opens the admin listener of cfg; page configures its status
// page.
func newAdmin(cfg config.Admin, m *metrics, src interface{ Tenants() []broker.TenantInfo }, serving func() bool, log *slog.Logger, page ...statuspage.Option) (*adminServer, error) {
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("daemon: admin listener (admin.listen) on %s: %w", cfg.Listen, err)
	}
	lis = server.LimitListener(lis, limits.Limits{MaxConnections: adminMaxConns, MaxConnectionsPerIP: adminMaxConnsPerIP})
	if !isLoopbackAddr(cfg.Listen) {
		log.Warn("the admin listener is not on loopback: it exposes tenant names and states (and metrics) to anyone who can connect; restrict it with a network policy or set admin.listen to a loopback address", "admin_listen", lis.Addr().String())
	}
	a := &adminServer{lis: lis, ready: readiness{tenants: src.Tenants, serving: serving}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := a.ready.check(); !ok {
			text(w, http.StatusServiceUnavailable, why)
			return
		}
		text(w, http.StatusOK, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", httppprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", httppprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", httppprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", httppprof.Trace)
	}
	// The status page answers the rest: /, /status.json and its
	// stylesheet, with its own security headers and 405 for non-GET.
	mux.Handle("/", statuspage.Handler(statuspage.FromBroker(src), append(page, statuspage.WithLogger(log))...))
	a.srv = &http.Server{
		// A web page that rebinds its own name to this address cannot read
		// the listener: 421 unless Host is an IP literal, localhost or one of
		// admin.hosts (authn.KnownHost).
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Content-Type-Options", "nosniff")
			if !authn.KnownHost(r.Host, cfg.Hosts) {
				text(w, http.StatusMisdirectedRequest, "421 misdirected request: this admin listener does not answer to that Host; add the name to admin.hosts")
				return
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return a, nil
}

// serve serves until shutdown; http.ErrServerClosed is not an error.
func (a *adminServer) serve() error {
	if err := a.srv.Serve(a.lis); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("daemon: admin listener: %w", err)
	}
	return nil
}

// close stops the admin listener at once, served or not.
func (a *adminServer) close() error { return errors.Join(a.srv.Close(), a.lis.Close()) }

// shutdown stops the admin listener, letting requests in progress finish
// for a moment.
func (a *adminServer) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
}

func text(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// healthServing reports the gRPC health of "" on h.
func healthServing(h *health.Server) func() bool {
	return func() bool {
		r, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}
}
