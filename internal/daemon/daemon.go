// Package daemon is the running broker service: it maps a loaded
// config.Config to the broker core, the access control layers and the gRPC
// server, serves until its context ends, applies reloads and drains on
// shutdown. cmd/broker is a shell around it (flags, config load, signals).
//
//	d, err := daemon.New(cfg, daemon.Options{Logger: log})
//	...
//	go d.Run(ctx)          // serves on d.Addr() until ctx is done
//	err = d.Reload(newCfg) // e.g. on SIGHUP
package daemon

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/guard"
	"github.com/tokenbroker/tokenbroker/internal/oauth"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/statuspage"
)

// auditRetryInterval is how often a broker whose audit writes fail tries
// again, so that it reports SERVING again without any call arriving.
const auditRetryInterval = 5 * time.Second

// ErrClosed is returned by Run on a daemon that was closed or already run.
var ErrClosed = errors.New("daemon: closed")

// Options tune New. Zero values mean defaults.
type Options struct {
	// Logger receives the service's logs; nil discards them.
	Logger *slog.Logger
	// Listen, if not empty, overrides cfg's listeners (--listen): at most
	// one host:port and one unix:///path. A reload does not count it as a
	// change.
	Listen []string
	// Dev is development mode (serve --dev): an embedded identity provider
	// on loopback and its tenants, kept across reloads; loopback only.
	Dev bool
	// AuditOutput receives the audit trail when the config names no audit
	// file; nil discards it.
	AuditOutput io.Writer
	// Notice receives the development mode banner; nil discards it.
	Notice io.Writer
	// UserAgent is sent to identity providers, e.g. "tokenbroker/v1.2.3".
	UserAgent string
	// Load loads the configuration again as New's was loaded, best with
	// config.Options.KeepTenantsOnFileError. Reread needs it; with it Run
	// watches config.Config.Files unless watch.enabled is false.
	Load func() (*config.Config, error)
	// Version names the build on the status page.
	Version string
	// TracerProvider traces gRPC calls and identity-provider requests;
	// nil means the one the OTEL_* environment configures, if any.
	TracerProvider trace.TracerProvider
}

// Daemon is a configured broker service whose listener is open. Create it
// with New, serve with Run, release it with Close. Reload and Addr are safe
// for concurrent use with Run.
type Daemon struct {
	log      *slog.Logger
	opts     Options
	lis      net.Listener    // nil when listen names only a Unix socket
	sock     *socketListener // nil without a Unix socket
	idp      *devidp.Server
	dev      []config.Tenant // the dev IdP's tenants, kept across reloads
	initial  []any           // restartOnly of the starting configuration
	posture  posture         // the running security, which no reload may lower (guarded by reloadMu)
	broker   *broker.Broker
	holder   *policy.Holder
	tls      *authn.Reloader
	tlsEvery time.Duration
	guard    *guard.Guard
	srv      *server.Server
	audit    *audit.Logger
	watch    watchState
	metrics  *metrics
	ups      *upstreams
	admin    *adminServer  // nil when admin.listen is ""
	oauth    *oauth.Server // nil when oauth.listen is ""
	oauthLis net.Listener
	closers  []func() error // what New acquired, released by Close last first

	reloadMu sync.Mutex // one reload at a time

	mu         sync.Mutex // guards the fields below
	started    bool
	closed     bool
	closeErr   error
	shutdown   config.Shutdown // reloadable
	lastReload statuspage.Reload
}

// New builds the service that cfg describes and opens its listeners; it
// serves nothing until Run. cfg is not modified. Configuration errors carry
// the config file's line (*config.Error) where there is one; a tenant with
// a LoadErr fails New. On error everything New acquired is released.
func New(cfg *config.Config, opts Options) (_ *Daemon, err error) {
	for _, t := range cfg.Tenants {
		if t.LoadErr != nil { // start fails fast; only a reload keeps a running tenant
			return nil, t.LoadErr
		}
	}
	if opts.AuditOutput == nil {
		opts.AuditOutput = io.Discard
	}
	d := &Daemon{log: cmp.Or(opts.Logger, slog.New(slog.DiscardHandler)), opts: opts, metrics: newMetrics(),
		initial: restartOnly(cfg), posture: postureOf(cfg), shutdown: cfg.Shutdown}
	d.watch.init(cfg)
	defer func() {
		if err != nil {
			_ = d.Close()
		}
	}()
	if cfg, err = withListen(cfg, opts.Listen); err != nil {
		return nil, err
	}
	if opts.Dev {
		if err := d.startDev(cfg); err != nil {
			return nil, err
		}
	}
	if err := d.secure(cfg); err != nil {
		return nil, err
	}
	traceGRPC, traceHTTP, err := d.tracing()
	if err != nil {
		return nil, err
	}
	if err := d.listen(cfg); err != nil {
		return nil, err
	}
	if err := d.build(cfg, traceGRPC, traceHTTP); err != nil {
		return nil, err
	}
	if err := d.startAdmin(cfg.Admin); err != nil {
		return nil, err
	}
	d.log.Info("listening", "addr", addrString(d.TCPAddr()), "socket", d.SocketPath(), "admin", addrString(d.AdminAddr()), "oauth", addrString(d.OAuthAddr()),
		"tenants", len(cfg.Tenants), "tls", d.tls != nil, "mutual_tls", d.posture.clientCA, "callers", len(cfg.Callers), "open", d.guard.Open())
	return d, nil
}

// secure builds the access control: the policy, the listeners' rules, the
// audit trail and TLS.
func (d *Daemon) secure(cfg *config.Config) error {
	pol, err := newPolicy(cfg)
	if err != nil {
		return err
	}
	if d.holder, err = policy.NewHolder(pol); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	if cfg.Listen != "" {
		if err := checkPlaintext("listen", cfg.Listen, cfg, !pol.Empty(), d.log); err != nil {
			return err
		}
	}
	if err := needSocket(cfg, cfg.Socket.Path != ""); err != nil {
		return err
	}
	if d.audit, err = openAudit(cfg.Audit, d.opts.AuditOutput, d.log); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	d.closers = append(d.closers, d.audit.Close)
	d.audit.OnWriteError(d.metrics.auditErrors.Inc)
	if t := cfg.TLS; t != nil {
		files := authn.TLSFiles{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile, RequireClientCert: t.RequireClientCert}
		if d.tls, err = authn.NewReloader(files, d.log); err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		d.tlsEvery = t.ReloadInterval
	}
	return nil
}

// listen opens the listeners, each with its connection caps: the gRPC
// host:port and Unix socket, and the token endpoint's (oauth.listen), which
// follows the gRPC listener's rules and is loopback only in development mode.
func (d *Daemon) listen(cfg *config.Config) error {
	if cfg.Listen != "" {
		lis, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("daemon: listen on %s: %w", cfg.Listen, err)
		}
		d.lis = server.LimitListener(lis, cfg.Limits)
		d.closers = append(d.closers, d.lis.Close)
	}
	if cfg.Socket.Path != "" {
		var err error
		if d.sock, err = listenSocket(cfg.Socket, cfg.Limits); err != nil {
			return err
		}
		d.closers = append(d.closers, d.sock.Close) // removes the socket file
	}
	addr := cfg.OAuth.Listen
	if addr == "" {
		return nil
	}
	if err := checkPlaintext("oauth.listen", addr, cfg, !d.holder.Load().Empty(), d.log); err != nil {
		return err
	}
	if d.opts.Dev && !isLoopbackAddr(addr) {
		return fmt.Errorf("daemon: --dev serves tokens to anyone who connects, so it listens on loopback only; oauth.listen %q is not a loopback address", addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("daemon: oauth listener (oauth.listen) on %s: %w", addr, err)
	}
	d.oauthLis = server.LimitListener(lis, cfg.Limits)
	d.closers = append(d.closers, d.oauthLis.Close)
	return nil
}

// build wires the broker with its tenants, the guard, the gRPC server (TLS
// on the host:port only, never on the socket) and the token endpoint.
func (d *Daemon) build(cfg *config.Config, sopts []grpc.ServerOption, traceHTTP func(http.RoundTripper) http.RoundTripper) error {
	d.ups = newUpstreams(d.metrics, d.opts.UserAgent, d.log, traceHTTP)
	d.closers = append(d.closers, func() error { d.ups.pools.CloseIdleConnections(); return nil })
	tenants, fetchers, err := d.ups.tenants(cfg.Tenants)
	if err != nil {
		return err
	}
	hs := health.NewServer()
	hstatus := server.NewHealthStatus(hs)
	if d.broker, err = broker.New(broker.Config{Tenants: tenants, Logger: d.log, UserAgent: d.opts.UserAgent,
		OnTenantHealth: hstatus.SetTenant, Limits: cfg.Limits}); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	d.closers = append(d.closers, d.broker.Close)
	d.ups.commit(fetchers)
	warnDeprecatedLimits(cfg.Limits, d.log)
	if d.guard, err = guard.New(guard.Config{
		Policy: d.holder, Audit: d.audit, Logger: d.log,
		Limits: cfg.Limits, DefaultScopes: d.ups.scopes,
		// No token without its audit line: take this replica and its
		// tenants out of service until the trail is writable again.
		OnAuditFailure: hstatus.Hold,
		OnDenial:       d.metrics.denied,
	}); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	var tlsCfg *tls.Config
	if d.tls != nil {
		creds := d.tls.Credentials()
		if d.sock != nil {
			creds = authn.SocketCredentials(creds)
		}
		sopts, tlsCfg = append(sopts, grpc.Creds(creds)), d.tls.TLSConfig()
	}
	d.srv = server.New(server.Config{
		Broker: d.broker, Health: hs, Logger: d.log,
		ServerOptions:     sopts,
		Tap:               d.guard.Tap,
		UnaryInterceptor:  d.guard.UnaryInterceptor(),
		StreamInterceptor: d.guard.StreamInterceptor(),
		Metrics:           d.metrics.grpc,
		Limits:            cfg.Limits,
		TenantAccess:      d.guard.TenantAccess,
	})
	d.closers = append(d.closers, func() error { d.srv.GRPC.Stop(); return nil })
	d.metrics.reg.MustRegister(tenantCollector{tenants: d.broker.Tenants})
	if d.oauthLis == nil {
		return nil
	}
	if d.oauth, err = oauth.New(oauth.Config{Broker: d.broker, Guard: d.guard, Logger: d.log, Limits: cfg.Limits, TLS: tlsCfg, OnResult: d.metrics.oauthResult}); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	d.closers = append(d.closers, d.oauth.Close)
	return nil
}

// startAdmin opens the admin listener, if admin.listen is set.
func (d *Daemon) startAdmin(cfg config.Admin) (err error) {
	if cfg.Listen == "" {
		return nil
	}
	d.admin, err = newAdmin(cfg, d.metrics, d.broker, healthServing(d.srv.Health), d.log,
		statuspage.WithVersion(d.opts.Version), statuspage.WithReload(d.reloadStatus))
	if err == nil {
		d.closers = append(d.closers, d.admin.close)
	}
	return err
}

// Addr is the address the daemon listens on, with the port the system
// chose for ":0"; without one, its Unix socket's.
func (d *Daemon) Addr() net.Addr {
	if d.lis == nil {
		return d.sock.Addr()
	}
	return d.lis.Addr()
}

// TCPAddr is the address of the host:port listener, nil without one.
func (d *Daemon) TCPAddr() net.Addr {
	if d.lis == nil {
		return nil
	}
	return d.lis.Addr()
}

// SocketPath is the path of the Unix socket listener, "" without one.
func (d *Daemon) SocketPath() string {
	if d.sock == nil {
		return ""
	}
	return d.sock.path
}

// AdminAddr is the admin listener's address (admin.listen), nil when it
// is disabled.
func (d *Daemon) AdminAddr() net.Addr {
	if d.admin == nil {
		return nil
	}
	return d.admin.lis.Addr()
}

// OAuthAddr is the OAuth2 token endpoint's address (oauth.listen), nil
// when it is disabled.
func (d *Daemon) OAuthAddr() net.Addr {
	if d.oauth == nil {
		return nil
	}
	return d.oauthLis.Addr()
}

// addrString is a.String(), "" for nil.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
