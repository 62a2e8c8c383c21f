// Package daemon is the running broker service: it maps a loaded
// config.Config to the broker core, the access control layers and the gRPC
// server, serves until its context ends, applies reloads and drains on
// shutdown. cmd/broker is a shell around it (flags, config load, signals);
// tests drive it through New, Run, Reload and Addr, without signals.
//
//	d, err := daemon.New(cfg, daemon.Options{Logger: log})
//	...
//	go d.Run(ctx)          // serves on d.Addr() until ctx is done
//	err = d.Reload(newCfg) // e.g. on SIGHUP
package daemon

import (
	"context"
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
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/guard"
	"github.com/tokenbroker/tokenbroker/internal/oauth"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/statuspage"
)

const (
	// auditRetryInterval is how often a broker whose audit writes fail
	// tries again, so that it can report SERVING without any call arriving.
	auditRetryInterval = 5 * time.Second
)

// ErrClosed is returned by Run on a daemon that was closed or already run.
var ErrClosed = errors.New("daemon: closed")

// Options tune New. Zero values mean defaults.
type Options struct {
	// Logger receives the service's logs; nil discards them.
	Logger *slog.Logger
	// Listen, if not empty, overrides cfg's listeners (the --listen
	// flags): at most one host:port and one unix:///path, as the listen
	// key takes them. A reload compares the file's own listen setting, so
	// it does not count this as a change.
	Listen []string
	// Dev is development mode (serve --dev): New starts the embedded
	// identity provider on loopback and adds its tenant "demo", kept across
	// reloads; the listener must then be a loopback address.
	Dev bool
	// AuditOutput receives the audit trail when the config names no audit
	// file (standard output in the binary); nil discards it.
	AuditOutput io.Writer
	// Notice receives the development mode banner; nil discards it.
	Notice io.Writer
	// UserAgent is sent to identity providers, e.g. "tokenbroker/v1.2.3".
	UserAgent string
	// Load loads the configuration again the way New's was loaded (the
	// config file, or the environment), best with
	// config.Options.KeepTenantsOnFileError so that one tenant's broken
	// file does not hold up the others' changes. Reread uses it, and with it Run
	// watches the configuration's files (config.Config.Files) and re-reads
	// it when one changes, unless the config's watch.enabled is false.
	// nil: no watching, and Reread fails.
	Load func() (*config.Config, error)
	// Version names the build on the status page.
	Version string
	// TracerProvider traces gRPC calls and identity-provider requests;
	// nil means the one the OTEL_* environment configures, if any (see
	// tracing.go: off unless asked for).
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
	dev      []config.Tenant // the dev IdP's tenant, kept across reloads
	initial  restartOnly
	posture  posture // the running security, which no reload may lower (guarded by reloadMu)
	broker   *broker.Broker
	holder   *policy.Holder
	tls      *authn.Reloader
	tlsEvery time.Duration
	guard    *guard.Guard
	srv      *server.Server
	audit    *audit.Logger
	defaults defaultScopes
	banner   string // the dev mode banner, printed by Run
	watch    watchState
	metrics  *metrics
	ups      *upstreams
	admin    *adminServer  // nil when admin.listen is ""
	oauth    *oauth.Server // nil when oauth.listen is ""
	oauthLis net.Listener
	stopTP   func(context.Context) error

	reloadMu sync.Mutex // one reload at a time

	mu         sync.Mutex // guards the fields below
	started    bool
	closed     bool
	closeErr   error
	shutdown   config.Shutdown // reloadable
	lastReload statuspage.Reload
}

// New builds the service that cfg describes and opens its listener; it
// serves nothing until Run. cfg is not modified. Errors about the
// configuration carry the config file's line (*config.Error) where it has
// one. A tenant with a LoadErr (config.Options.KeepTenantsOnFileError)
// fails New with that error. On error everything New acquired is released.
func New(cfg *config.Config, opts Options) (_ *Daemon, err error) {
	for _, t := range cfg.Tenants {
		if t.LoadErr != nil { // start fails fast; only a reload keeps a running tenant
			return nil, t.LoadErr
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.AuditOutput == nil {
		opts.AuditOutput = io.Discard
	}
	d := &Daemon{log: log, opts: opts, initial: restartOnlyOf(cfg), posture: postureOf(cfg), shutdown: cfg.Shutdown, stopTP: func(context.Context) error { return nil }}
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
		if err := d.startDevIdP(cfg.Listen); err != nil {
			return nil, err
		}
		cfg.Tenants = append(cfg.Tenants, d.dev...)
		// A second dev broker, or anything else on these ports, must not
		// stop it: take any port instead (the banner names them).
		cfg.Admin.Listen, cfg.OAuth.Listen = freeOr(cfg.Admin.Listen), freeOr(cfg.OAuth.Listen)
	}

	// Access control: policy, audit trail, guard, TLS.
	pol, err := newPolicy(cfg)
	if err != nil {
		return nil, err
	}
	if d.holder, err = policy.NewHolder(pol); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	if err := d.checkListeners(cfg, !pol.Empty()); err != nil {
		return nil, err
	}
	// Observability: metrics always (served if the admin listener is
	// on), tracing if asked for.
	d.metrics = newMetrics()
	tp := opts.TracerProvider
	if tp == nil {
		if tp, d.stopTP, err = tracerFromEnv(context.Background()); err != nil {
			return nil, err
		}
	}
	var traceHTTP func(http.RoundTripper) http.RoundTripper
	if tp != nil {
		traceHTTP = httpTracing(tp)
	}
	d.ups = newUpstreams(d.metrics, opts.UserAgent, log, traceHTTP)
	tenants, fetchers, err := d.ups.tenants(cfg.Tenants)
	if err != nil {
		return nil, err
	}
	if d.audit, err = openAudit(cfg.Audit, opts.AuditOutput, log); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d.audit.OnWriteError(d.metrics.auditErrors.Inc)
	if cfg.TLS != nil {
		if d.tls, err = authn.NewReloader(tlsFiles(cfg.TLS), log); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
		d.tlsEvery = cfg.TLS.ReloadInterval
	}

	if err := d.listen(cfg); err != nil {
		return nil, err
	}
	if err := d.listenOAuth(cfg, !pol.Empty()); err != nil {
		return nil, err
	}
	hs := health.NewServer()
	hstatus := server.NewHealthStatus(hs)
	if d.broker, err = broker.New(broker.Config{
		Tenants: tenants, Logger: log, UserAgent: opts.UserAgent,
		OnTenantHealth: hstatus.SetTenant,
		Limits:         cfg.Limits,
	}); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d.ups.commit(fetchers)
	d.defaults.set(tenants)
	warnDeprecatedLimits(cfg.Limits, log)
	if d.guard, err = guard.New(guard.Config{
		Policy: d.holder, Audit: d.audit, Logger: log,
		Limits: cfg.Limits, DefaultScopes: d.defaults.get,
		// No token without its audit line: take this replica and its
		// tenants out of service until the trail is writable again.
		OnAuditFailure: hstatus.Hold,
		OnDenial:       d.metrics.denied,
	}); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	sopts := d.transportCreds()
	if tp != nil {
		sopts = append(sopts, grpcTracing(tp))
	}
	d.srv = server.New(server.Config{
		Broker: d.broker, Health: hs, Logger: log,
		ServerOptions:     sopts,
		Tap:               d.guard.Tap,
		UnaryInterceptor:  d.guard.UnaryInterceptor(),
		StreamInterceptor: d.guard.StreamInterceptor(),
		Metrics:           d.metrics.grpc,
		Limits:            cfg.Limits,
		TenantAccess:      d.guard.TenantAccess,
	})
	if err := d.newOAuth(cfg.Limits); err != nil {
		return nil, err
	}
	d.metrics.reg.MustRegister(tenantCollector{tenants: d.broker.Tenants})
	if cfg.Admin.Listen != "" {
		if d.admin, err = newAdmin(cfg.Admin, d.metrics, d.broker, healthServing(hs), log,
			statuspage.WithVersion(opts.Version), statuspage.WithReload(d.reloadStatus)); err != nil {
			return nil, err
		}
		if !isLoopbackAddr(cfg.Admin.Listen) {
			log.Warn("the admin listener is not on loopback: it exposes tenant names and states (and metrics) to anyone who can connect; restrict it with a network policy or set admin.listen to a loopback address", "admin_listen", d.AdminAddr().String())
		}
	}
	log.Info("listening", "addr", addrString(d.TCPAddr()), "socket", d.SocketPath(), "admin", addrString(d.AdminAddr()), "oauth", addrString(d.OAuthAddr()),
		"tenants", len(cfg.Tenants), "tls", d.tls != nil,
		"mutual_tls", cfg.TLS != nil && cfg.TLS.ClientCAFile != "", "callers", len(cfg.Callers), "open", d.guard.Open())
	if opts.Dev {
		d.banner = devBanner(d.idp.URL(), d.TCPAddr(), d.SocketPath(), addrString(d.OAuthAddr()), d.guard.Open())
		if d.admin != nil {
			d.banner += fmt.Sprintf("  Status page and metrics: http://%s/ and http://%s/metrics\n\n", d.AdminAddr(), d.AdminAddr())
		}
	}
	return d, nil
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

// checkListeners applies the listeners' rules: plaintext only on
// loopback or a Unix socket (local too) once callers are configured, and
// callers identified on a socket only with one.
func (d *Daemon) checkListeners(cfg *config.Config, callers bool) error {
	if cfg.Listen != "" {
		if err := checkPlaintext("listen", cfg.Listen, cfg, callers, d.log); err != nil {
			return err
		}
	}
	return needSocket(cfg, cfg.Socket.Path != "")
}

// listen opens the gRPC listeners: the host:port and the Unix socket,
// each with its own connection caps.
func (d *Daemon) listen(cfg *config.Config) error {
	if cfg.Listen != "" {
		lis, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("daemon: listen on %s: %w", cfg.Listen, err)
		}
		d.lis = server.LimitListener(lis, cfg.Limits)
	}
	if cfg.Socket.Path != "" {
		var err error
		if d.sock, err = listenSocket(cfg.Socket, cfg.Limits); err != nil {
			return err
		}
	}
	return nil
}

// transportCreds is the gRPC server's TLS, if configured: on the
// host:port only, never on the socket.
func (d *Daemon) transportCreds() []grpc.ServerOption {
	if d.tls == nil {
		return nil
	}
	creds := d.tls.Credentials()
	if d.sock != nil {
		creds = authn.SocketCredentials(creds)
	}
	return []grpc.ServerOption{grpc.Creds(creds)}
}

// listeners are the gRPC listeners that are open.
func (d *Daemon) listeners() []net.Listener {
	var out []net.Listener
	if d.lis != nil {
		out = append(out, d.lis)
	}
	if d.sock != nil {
		out = append(out, d.sock)
	}
	return out
}

// AdminAddr is the admin listener's address (admin.listen), nil when it
// is disabled.
func (d *Daemon) AdminAddr() net.Addr {
	if d.admin == nil {
		return nil
	}
	return d.admin.lis.Addr()
}

// listenOAuth opens the token endpoint's listener, if oauth.listen is
// set, under the gRPC listener's rules (checkPlaintext; loopback only in
// development mode), with its own connection caps.
func (d *Daemon) listenOAuth(cfg *config.Config, callers bool) error {
	addr := cfg.OAuth.Listen
	if addr == "" {
		return nil
	}
	if err := checkPlaintext("oauth.listen", addr, cfg, callers, d.log); err != nil {
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
	return nil
}

// newOAuth builds the token endpoint on its listener, if it has one:
// the gRPC listener's TLS, the same guard and broker.
func (d *Daemon) newOAuth(l limits.Limits) error {
	if d.oauthLis == nil {
		return nil
	}
	var tlsCfg *tls.Config
	if d.tls != nil {
		tlsCfg = d.tls.TLSConfig()
	}
	var err error
	d.oauth, err = oauth.New(oauth.Config{Broker: d.broker, Guard: d.guard, Logger: d.log, Limits: l, TLS: tlsCfg, OnResult: d.metrics.oauthResult})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// addrString is a.String(), "" for nil.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// OAuthAddr is the OAuth2 token endpoint's address (oauth.listen), nil
// when it is disabled.
func (d *Daemon) OAuthAddr() net.Addr {
	if d.oauth == nil {
		return nil
	}
	return d.oauthLis.Addr()
}

// Run serves until ctx is done, then drains and closes the daemon: gRPC
// health and /readyz turn NOT_SERVING at once, calls are still served
// for shutdown.drain (so that load balancers remove the replica), then
// watch streams end UNAVAILABLE and in-flight calls get shutdown.timeout,
// after which they end UNAVAILABLE too. It returns nil after a shutdown through ctx, the server's
// error if serving fails, and ErrClosed if the daemon was closed or run
// before.
func (d *Daemon) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.closed || d.started {
		d.mu.Unlock()
		return ErrClosed
	}
	d.started = true
	d.mu.Unlock()

	// Background work that ends before Run returns.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer func() { stopBG(); wg.Wait() }()
	if d.tls != nil {
		wg.Go(func() { d.tls.Watch(bg, d.tlsEvery) })
	}
	wg.Go(func() { d.guard.WatchAudit(bg, auditRetryInterval) })
	if d.opts.Load != nil && !d.watch.off {
		wg.Go(func() { d.watchFiles(bg) })
	}
	if d.banner != "" && d.opts.Notice != nil {
		fmt.Fprint(d.opts.Notice, d.banner)
	}

	lis := d.listeners()
	serveErr := make(chan error, len(lis))
	for _, l := range lis {
		go func() { serveErr <- d.srv.GRPC.Serve(l) }()
	}
	// waitServe waits for the Serve calls still running.
	waitServe := func(done int) {
		for range len(lis) - done {
			<-serveErr
		}
	}
	adminErr := make(chan error, 1)
	if d.admin != nil {
		go func() { adminErr <- d.admin.serve() }()
	}
	oauthErr := make(chan error, 1)
	if d.oauth != nil {
		go func() { oauthErr <- d.oauth.Serve(d.oauthLis) }()
	}
	// A listener that fails puts nil back, for the stops below.
	var failed error
	served := 0
	select {
	case failed = <-serveErr:
		if failed != nil {
			failed = fmt.Errorf("daemon: %w", failed)
		}
		served = 1
	case failed = <-adminErr: // only a failure: shutdown has not begun
		adminErr <- nil
	case failed = <-oauthErr: // likewise
		oauthErr <- nil
	case <-ctx.Done():
		d.drain()
		waitServe(0)
		d.stopOAuth(oauthErr)
		d.stopAdmin(adminErr)
		err := d.Close()
		d.log.Info("stopped")
		return err
	}
	// A listener failed: stop the others at once.
	d.srv.GRPC.Stop()
	waitServe(served)
	d.stopOAuth(oauthErr)
	d.stopAdmin(adminErr)
	_ = d.Close()
	return failed
}

// drain runs the shutdown sequence of Run and logs each step.
func (d *Daemon) drain() {
	d.mu.Lock()
	sd := d.shutdown
	d.mu.Unlock()
	if sd.Timeout <= 0 {
		sd.Timeout = config.DefaultShutdownTimeout
	}
	start := time.Now()
	if d.admin != nil {
		d.admin.ready.draining.Store(true)
	}
	if d.oauth != nil {
		d.oauth.Drain() // keep-alive off: clients reconnect, through the load balancer
	}
	d.srv.Health.Shutdown() // every service NOT_SERVING, for good
	d.log.Info("shutting down: health NOT_SERVING; serving calls while load balancers remove this replica", "drain", sd.Drain.String(), "timeout", sd.Timeout.String())
	if sd.Drain > 0 {
		t := time.NewTimer(sd.Drain)
		<-t.C
	}
	d.log.Info("drain over: watch streams end UNAVAILABLE; waiting for in-flight calls", "elapsed", time.Since(start).Round(time.Millisecond).String())
	sctx, cancel := context.WithTimeout(context.Background(), sd.Timeout)
	var wg sync.WaitGroup
	if d.oauth != nil {
		wg.Go(func() {
			if err := d.oauth.Shutdown(sctx); err != nil {
				d.log.Warn("OAuth2 token endpoint stopped after the shutdown timeout", "error", err)
			}
		})
	}
	if err := d.srv.Shutdown(sctx); err != nil {
		d.log.Warn("gRPC server stopped after the shutdown timeout", "error", err)
	}
	wg.Wait()
	cancel()
	d.log.Info("gRPC server stopped", "elapsed", time.Since(start).Round(time.Millisecond).String())
}

// stopOAuth closes the token endpoint, if it is not shut down yet, and
// waits for its Serve.
func (d *Daemon) stopOAuth(oauthErr <-chan error) {
	if d.oauth == nil {
		return
	}
	_ = d.oauth.Close()
	if err := <-oauthErr; err != nil {
		d.log.Warn("OAuth2 token endpoint", "error", err)
	}
}

// stopAdmin shuts the admin listener down and waits for its Serve.
func (d *Daemon) stopAdmin(adminErr <-chan error) {
	if d.admin == nil {
		return
	}
	d.admin.shutdown()
	if err := <-adminErr; err != nil {
		d.log.Warn("admin listener", "error", err)
	}
}

// Close stops serving at once (no drain), releases the listener, the
// broker, the audit trail and the development IdP. It is idempotent and
// returns the first error of its first call each time.
func (d *Daemon) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.closeErr
	}
	d.closed = true
	var errs []error
	if d.srv != nil {
		d.srv.GRPC.Stop() // closes the listener if Serve runs
	}
	if d.lis != nil {
		if err := d.lis.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if d.sock != nil {
		errs = append(errs, d.sock.Close()) // removes the socket file
	}
	if d.admin != nil {
		_ = d.admin.srv.Close() // and its listener, served or not
		_ = d.admin.lis.Close()
	}
	if d.oauth != nil {
		_ = d.oauth.Close()
	}
	if d.oauthLis != nil {
		_ = d.oauthLis.Close()
	}
	if d.broker != nil {
		d.broker.Close()
	}
	if d.ups != nil {
		d.ups.pools.CloseIdleConnections() // the tenants' fetchers ended with the broker
	}
	if d.audit != nil {
		errs = append(errs, d.audit.Close())
	}
	if d.idp != nil {
		errs = append(errs, d.idp.Close())
	}
	if d.stopTP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, d.stopTP(ctx)) // flushes spans
		cancel()
	}
	for _, err := range errs {
		if err != nil {
			d.closeErr = fmt.Errorf("daemon: close: %w", err)
			break
		}
	}
	return d.closeErr
}

// startDevIdP starts the development identity provider with two generated
// clients, and prepares their tenants "demo" (a client secret) and
// "demo-jwt" (private_key_jwt with a key made at start) and the banner.
func (d *Daemon) startDevIdP(listen string) error {
	if listen != "" && !isLoopbackAddr(listen) {
		return fmt.Errorf("daemon: --dev serves tokens to anyone who connects, so it listens on loopback only; %q is not a loopback address (try --listen 127.0.0.1:50051)", listen)
	}
	client := devidp.NewClient()
	jwtClient, key, err := devJWTClient()
	if err != nil {
		return err
	}
	// Listening on loopback does not block; the IdP lives as long as d.
	// On devIdPAddr when free, so that the README's lines work; else any
	// port (the banner names it).
	idpCfg := devidp.Config{Addr: devIdPAddr, Clients: []devidp.Client{client, jwtClient}, Logger: d.log}
	idp, err := devidp.Start(context.Background(), idpCfg)
	if err != nil {
		idpCfg.Addr = ""
		idp, err = devidp.Start(context.Background(), idpCfg)
	}
	if err != nil {
		return fmt.Errorf("daemon: start the development identity provider: %w", err)
	}
	d.idp = idp
	d.dev = []config.Tenant{{
		Name: "demo", TokenURL: idp.TokenURL(), ClientID: client.ID,
		ClientSecret: creds.Secret(client.Secret), AuthStyle: config.AuthStyleBody,
		CredentialsSource: "development identity provider",
	}, {
		Name: "demo-jwt", TokenURL: idp.TokenURL(), ClientID: jwtClient.ID,
		ClientKey: key, AuthStyle: config.AuthStylePrivateKeyJWT,
		CredentialsSource: "development identity provider (private_key_jwt)",
	}}
	return nil
}

// freeOr returns addr if it can be listened on now, else its host with
// port 0 (any free port); "" stays "".
func freeOr(addr string) string {
	if addr == "" {
		return ""
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		if host, _, serr := net.SplitHostPort(addr); serr == nil {
			return net.JoinHostPort(host, "0")
		}
		return addr
	}
	_ = lis.Close()
	return addr
}

// devIdPAddr is where serve --dev's identity provider listens if it can.
const devIdPAddr = "127.0.0.1:50053"

// devBanner tells a developer what --dev started and how to try it.
// tcp is the host:port listener's address, socket the Unix socket's path,
// oauthAddr the token endpoint's; each absent if off.
func devBanner(idpURL string, tcp net.Addr, socket, oauthAddr string, open bool) string {
	auth, secret := "Callers are authenticated and authorized by the config's callers.", "$API_KEY"
	if open {
		auth, secret = "Every loopback caller may get tokens; nothing is authenticated.", "any-secret"
	}
	b := fmt.Sprintf(`
  *** DEVELOPMENT MODE — not for production ***
  Embedded identity provider: %s (tenants "demo" with a client secret and
  "demo-jwt" with private_key_jwt, credentials generated at start)
  %s

  Try:
`, idpURL, auth)
	if tcp != nil {
		addr := tcp.String()
		b += fmt.Sprintf(`    grpcurl -plaintext -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/GetToken
    grpcurl -plaintext -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/WatchToken
    go run ./cmd/broker token --addr %s --tenant demo --decode
    go run ./cmd/broker call get %s%s --addr %s --tenant demo
`, addr, addr, addr, idpURL, devidp.WhoamiPath, addr)
	}
	if socket != "" {
		b += fmt.Sprintf(`    grpcurl -plaintext -unix -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/GetToken
    go run ./cmd/broker token --addr unix://%s --tenant demo --decode
    go run ./cmd/broker call get %s%s --addr unix://%s --tenant demo
`, socket, socket, idpURL, devidp.WhoamiPath, socket)
	}
	b += "\n"
	if oauthAddr != "" {
		b += fmt.Sprintf("  OAuth2 token endpoint (any OAuth2 client; client_id names the tenant, the secret is an API key):\n"+
			"    curl -s -u demo:%s -d grant_type=client_credentials http://%s%s\n\n", secret, oauthAddr, oauth.Path)
	}
	return b
}
