package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/credentials"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/guard"
	"github.com/tokenbroker/tokenbroker/internal/hygiene"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/server"
)

// shutdownTimeout bounds how long in-flight calls may take at shutdown.
const shutdownTimeout = 10 * time.Second

// auditRetryInterval is how often a broker whose audit writes fail tries
// again, so that it can report SERVING without any call arriving.
const auditRetryInterval = 5 * time.Second

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "broker config file (YAML); without it, one tenant \"default\" from KOGNIC_CREDENTIALS or KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET")
	dev := fs.Bool("dev", false, "development mode: start an embedded identity provider on loopback and a tenant \"demo\"")
	listen := fs.String("listen", "", "gRPC listen address, overriding the config (default "+config.DefaultListen+")")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}

	cfg, err := loadConfig(*configPath, *dev, getenv, log)
	if err != nil {
		return err
	}
	restartOnly := restartOnlyOf(cfg)
	if *listen != "" {
		cfg.Listen = *listen
	}

	var idp *devidp.Server
	var devTenants []config.Tenant
	if *dev {
		if !isLoopbackAddr(cfg.Listen) {
			return fmt.Errorf("serve: --dev serves tokens to anyone who connects, so it listens on loopback only; %q is not a loopback address (try --listen 127.0.0.1:50051)", cfg.Listen)
		}
		client := devidp.NewClient()
		idp, err = devidp.Start(ctx, devidp.Config{Clients: []devidp.Client{client}, Logger: log})
		if err != nil {
			return fmt.Errorf("serve: start the development identity provider: %w", err)
		}
		defer idp.Close()
		devTenants = []config.Tenant{{
			Name: "demo", TokenURL: idp.TokenURL(), ClientID: client.ID,
			ClientSecret: credentials.Secret(client.Secret), AuthStyle: config.AuthStyleBody,
			CredentialsSource: "development identity provider",
		}}
		cfg.Tenants = append(cfg.Tenants, devTenants...)
	}

	// Access control: policy, audit trail, guard, TLS.
	pol, err := newPolicy(cfg)
	if err != nil {
		return err
	}
	holder, err := policy.NewHolder(pol)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if !pol.Empty() && cfg.TLS == nil && !isLoopbackAddr(cfg.Listen) {
		if !cfg.InsecurePlaintext {
			return fmt.Errorf("serve: callers are configured but %s is a plaintext listener on a non-loopback address, where API keys would cross the network in clear; add a tls section, listen on a loopback address, or set insecure_plaintext: true to accept this", cfg.Listen)
		}
		log.Warn("INSECURE PLAINTEXT: callers are configured and the listener is plaintext on a non-loopback address (insecure_plaintext: true); client certificates and API keys from other hosts cannot authenticate", "listen", cfg.Listen)
	}
	tenants, err := brokerTenants(cfg.Tenants)
	if err != nil {
		return err
	}
	auditLog, err := openAudit(cfg.Audit.Path, stdout, log)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer auditLog.Close()
	var reloader *authn.Reloader
	if cfg.TLS != nil {
		if reloader, err = authn.NewReloader(tlsFiles(cfg.TLS), log); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen on %s: %w", cfg.Listen, err)
	}
	lis = server.LimitListener(lis, connLimits(cfg.Limits))
	hs := health.NewServer()
	b, err := broker.New(broker.Config{
		Tenants:        tenants,
		Logger:         log,
		UserAgent:      "tokenbroker/" + version(),
		OnTenantHealth: server.TenantHealth(hs),
	})
	if err != nil {
		lis.Close()
		return fmt.Errorf("serve: %w", err)
	}
	defaults := &defaultScopes{}
	defaults.set(tenants)
	g, err := guard.New(guard.Config{
		Policy: holder, Audit: auditLog, Logger: log,
		Limits: guardLimits(cfg.Limits), DefaultScopes: defaults.get,
		OnAuditFailure: func(failing bool) {
			// No token without its audit line: take this replica out of
			// service until the trail is writable again.
			st := healthpb.HealthCheckResponse_SERVING
			if failing {
				st = healthpb.HealthCheckResponse_NOT_SERVING
			}
			hs.SetServingStatus("", st)
		},
	})
	if err != nil {
		lis.Close()
		b.Close()
		return fmt.Errorf("serve: %w", err)
	}
	var opts []grpc.ServerOption
	if reloader != nil {
		opts = append(opts, grpc.Creds(reloader.Credentials()))
	}
	srv := server.New(server.Config{
		Broker: b, Health: hs, Logger: log,
		ServerOptions:      append(opts, g.ServerOptions()...),
		UnaryInterceptors:  g.UnaryInterceptors(),
		StreamInterceptors: g.StreamInterceptors(),
		Limits:             connLimits(cfg.Limits),
		TenantAccess:       g.TenantAccess,
	})

	// Background work that ends before serve returns.
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stopBG(); wg.Wait() }()
	if reloader != nil {
		wg.Go(func() { reloader.Watch(bg, cfg.TLS.ReloadInterval) })
	}
	wg.Go(func() { g.WatchAudit(bg, auditRetryInterval) })

	hup := make(chan os.Signal, 1)
	if *configPath != "" {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	rl := &configReloader{
		path: *configPath, extra: devTenants, restartOnly: restartOnly, log: log,
		broker: b, holder: holder, tls: reloader, defaults: defaults,
	}

	addr := lis.Addr().String()
	log.Info("listening", "addr", addr, "tenants", len(cfg.Tenants), "tls", reloader != nil,
		"mutual_tls", cfg.TLS != nil && cfg.TLS.ClientCAFile != "", "callers", len(cfg.Callers), "open", g.Open())
	if *dev {
		auth := "Callers are authenticated and authorized by the config's callers."
		if g.Open() {
			auth = "Every loopback caller may get tokens; nothing is authenticated."
		}
		fmt.Fprintf(stderr, `
  *** DEVELOPMENT MODE — not for production ***
  Embedded identity provider: %s (tenant "demo", credentials generated at start)
  %s

  Try:
    grpcurl -plaintext -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/GetToken
    grpcurl -plaintext -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/WatchToken
    go run ./cmd/broker token --addr %s --tenant demo --decode

`, idp.URL(), auth, addr, addr, addr)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.GRPC.Serve(lis) }()

	for {
		select {
		case err := <-serveErr:
			b.Close()
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			rl.reload()
			continue
		case <-ctx.Done():
		}
		break
	}
	log.Info("shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "error", err)
	}
	cancel()
	b.Close()
	log.Info("stopped")
	return nil
}

func loadConfig(path string, dev bool, getenv func(string) string, log *slog.Logger) (*config.Config, error) {
	opts := config.Options{Logger: log}
	switch {
	case path != "":
		cfg, err := config.LoadWith(path, opts)
		if err != nil {
			return nil, err
		}
		return cfg, nil
	case dev:
		return &config.Config{Listen: config.DefaultListen}, nil
	}
	lookup := func(k string) (string, bool) { v := getenv(k); return v, v != "" }
	return config.FromEnvWith(lookup, opts)
}

// restartOnly are the settings a reload does not apply.
type restartOnly struct {
	listen string
	tls    config.TLS
	hasTLS bool
	audit  config.Audit
	limits config.Limits
}

func restartOnlyOf(cfg *config.Config) restartOnly {
	r := restartOnly{listen: cfg.Listen, audit: cfg.Audit, limits: cfg.Limits}
	if cfg.TLS != nil {
		r.tls, r.hasTLS = *cfg.TLS, true
	}
	return r
}

// configReloader applies a new config file on SIGHUP: the policy is built
// first, then the tenants are replaced, then the policy goes live, then
// the TLS files are re-read. Any error keeps the running configuration.
type configReloader struct {
	path        string
	extra       []config.Tenant // --dev's tenant, kept across reloads
	restartOnly restartOnly
	log         *slog.Logger
	broker      *broker.Broker
	holder      *policy.Holder
	tls         *authn.Reloader
	defaults    *defaultScopes
}

func (r *configReloader) reload() {
	fail := func(err error) {
		r.log.Error("config reload failed; keeping the running configuration", "error", err)
	}
	cfg, err := config.LoadWith(r.path, config.Options{Logger: r.log})
	if err != nil {
		fail(err)
		return
	}
	cfg.Tenants = append(cfg.Tenants, r.extra...)
	pol, err := newPolicy(cfg)
	if err != nil {
		fail(err)
		return
	}
	tenants, err := brokerTenants(cfg.Tenants)
	if err != nil {
		fail(err)
		return
	}
	if err := r.broker.SetTenants(tenants); err != nil {
		fail(err)
		return
	}
	r.defaults.set(tenants)
	if err := r.holder.Store(pol); err != nil {
		fail(err)
		return
	}
	if r.tls != nil {
		if _, err := r.tls.Reload(); err != nil {
			r.log.Warn("TLS reload failed; keeping the current certificate", "error", err)
		}
	}
	if restartOnlyOf(cfg) != r.restartOnly {
		r.log.Warn("listen, tls, audit and limits changes take effect only at restart")
	}
	if pol.Empty() {
		r.log.Warn("NO CALLERS CONFIGURED: every loopback client may get every tenant's tokens without authentication, and other clients are refused")
	}
	r.log.Info("config reloaded", "tenants", len(cfg.Tenants), "callers", len(cfg.Callers))
}

// newPolicy builds the access policy of cfg's callers; its errors carry
// the config file's line.
func newPolicy(cfg *config.Config) (*policy.Policy, error) {
	callers := make([]policy.Caller, 0, len(cfg.Callers))
	for _, c := range cfg.Callers {
		callers = append(callers, policy.Caller{
			Name: c.Name, SPIFFEID: c.SPIFFEID, DNSName: c.DNSName, CommonName: c.CommonName,
			APIKeySHA256: c.APIKeySHA256, Tenants: c.Tenants, Scopes: c.Scopes,
		})
	}
	pol, err := policy.New(callers)
	if fe, ok := errors.AsType[*policy.FieldError](err); ok {
		return nil, cfg.ErrorAt(fe.Field, fe.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("config: callers: %w", err)
	}
	return pol, nil
}

func tlsFiles(t *config.TLS) authn.TLSFiles {
	return authn.TLSFiles{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile, RequireClientCert: t.RequireClientCert}
}

func guardLimits(l config.Limits) guard.Limits {
	return guard.Limits{
		RequestsPerSecond: l.RequestsPerSecond, Burst: l.Burst, MaxStreamsPerCaller: l.MaxStreamsPerCaller,
		MaxScopesPerRequest: l.MaxScopesPerRequest, MaxMessageBytes: l.MaxMessageBytes,
		InvalidationsPerSecond: l.InvalidationsPerSecond, InvalidationBurst: l.InvalidationBurst,
		DenialsPerSecondPerIP: l.DenialsPerSecondPerIP, DenialBurstPerIP: l.DenialBurstPerIP,
	}
}

func connLimits(l config.Limits) server.ConnLimits {
	return server.ConnLimits{
		MaxHeaderListBytes: l.MaxHeaderListBytes, MaxStreamsPerConn: l.MaxStreamsPerConn,
		MaxConnections: l.MaxConnections, MaxConnectionsPerIP: l.MaxConnectionsPerIP,
		MaxOpenStreamsPerIP: l.MaxOpenStreamsPerIP, HandshakeTimeout: l.HandshakeTimeout,
		MaxConnectionIdle: l.MaxConnectionIdle,
	}
}

// openAudit opens the audit trail: the file at path, or stdout for "" and "-".
func openAudit(path string, stdout io.Writer, log *slog.Logger) (*audit.Logger, error) {
	if path == "" || path == "-" {
		return audit.New(stdout), nil
	}
	l, err := audit.Open(path)
	if err != nil {
		return nil, err
	}
	if err := hygiene.CheckFileMode(path); err != nil {
		log.Warn("audit file readable by group or others; it is created 0600, but this one already existed", "file", path, "error", err)
	}
	return l, nil
}

// defaultScopes holds each tenant's default scopes for the guard.
type defaultScopes struct {
	m atomic.Pointer[map[string][]string]
}

func (d *defaultScopes) set(ts []broker.Tenant) {
	m := make(map[string][]string, len(ts))
	for _, t := range ts {
		m[t.Name] = t.Scopes
	}
	d.m.Store(&m)
}

func (d *defaultScopes) get(tenant string) []string {
	if m := d.m.Load(); m != nil {
		return (*m)[tenant]
	}
	return nil
}

func brokerTenants(ts []config.Tenant) ([]broker.Tenant, error) {
	out := make([]broker.Tenant, 0, len(ts))
	for _, t := range ts {
		style := oauth2.AuthStyleInParams
		if t.AuthStyle == config.AuthStyleBasic {
			style = oauth2.AuthStyleInHeader
		}
		roots, err := hygiene.RootCAs(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("config: tenant %q: %w", t.Name, err)
		}
		var fallbacks []upstream.Credential
		for _, f := range t.Fallbacks {
			fallbacks = append(fallbacks, upstream.Credential{Name: f.Source, ClientID: f.ClientID, ClientSecret: f.ClientSecret})
		}
		out = append(out, broker.Tenant{
			Name: t.Name, TokenURL: t.TokenURL, ClientID: t.ClientID,
			ClientSecret: t.ClientSecret, Scopes: t.Scopes, AuthStyle: style, RootCAs: roots,
			Fallbacks: fallbacks,
		})
	}
	return out, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
