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
	"syscall"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc/health"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/credentials"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/server"
)

// shutdownTimeout bounds how long in-flight calls may take at shutdown.
const shutdownTimeout = 10 * time.Second

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

	cfg, err := loadConfig(*configPath, *dev, getenv)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}

	var idp *devidp.Server
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
		cfg.Tenants = append(cfg.Tenants, config.Tenant{
			Name: "demo", TokenURL: idp.TokenURL(), ClientID: client.ID,
			ClientSecret: credentials.Secret(client.Secret), AuthStyle: config.AuthStyleBody,
			CredentialsSource: "development identity provider",
		})
	}

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen on %s: %w", cfg.Listen, err)
	}
	hs := health.NewServer()
	b, err := broker.New(broker.Config{
		Tenants:        brokerTenants(cfg.Tenants),
		Logger:         log,
		UserAgent:      "tokenbroker/" + version(),
		OnTenantHealth: server.TenantHealth(hs),
	})
	if err != nil {
		lis.Close()
		return fmt.Errorf("serve: %w", err)
	}
	srv := server.New(server.Config{Broker: b, Health: hs, Logger: log})

	addr := lis.Addr().String()
	log.Info("listening", "addr", addr, "tenants", len(cfg.Tenants))
	if *dev {
		fmt.Fprintf(stderr, `
  *** DEVELOPMENT MODE — not for production ***
  Embedded identity provider: %s (tenant "demo", credentials generated at start)
  Every loopback caller may get tokens; nothing is authenticated.

  Try:
    grpcurl -plaintext -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/GetToken
    grpcurl -plaintext -d '{"tenant":"demo"}' %s tokenbroker.v1.TokenBrokerService/WatchToken
    go run ./cmd/broker token --addr %s --tenant demo --decode

`, idp.URL(), addr, addr, addr)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.GRPC.Serve(lis) }()

	hup := make(chan os.Signal, 1)
	if *configPath != "" {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	for {
		select {
		case err := <-serveErr:
			b.Close()
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			reload(*configPath, b, log)
			continue
		case <-ctx.Done():
		}
		break
	}
	log.Info("shutting down", "timeout", shutdownTimeout)
	srv.Shutdown(shutdownTimeout)
	b.Close()
	log.Info("stopped")
	return nil
}

func loadConfig(path string, dev bool, getenv func(string) string) (*config.Config, error) {
	switch {
	case path != "":
		cfg, err := config.Load(path, time.Now())
		if err != nil {
			return nil, err
		}
		return cfg, nil
	case dev:
		return &config.Config{Listen: config.DefaultListen}, nil
	}
	lookup := func(k string) (string, bool) { v := getenv(k); return v, v != "" }
	return config.FromEnv(lookup, time.Now())
}

func reload(path string, b *broker.Broker, log *slog.Logger) {
	cfg, err := config.Load(path, time.Now())
	if err == nil {
		err = b.SetTenants(brokerTenants(cfg.Tenants))
	}
	if err != nil {
		log.Error("config reload failed; keeping the running configuration", "error", err)
		return
	}
	log.Info("config reloaded", "tenants", len(cfg.Tenants))
}

func brokerTenants(ts []config.Tenant) []broker.Tenant {
	out := make([]broker.Tenant, 0, len(ts))
	for _, t := range ts {
		style := oauth2.AuthStyleInParams
		if t.AuthStyle == config.AuthStyleBasic {
			style = oauth2.AuthStyleInHeader
		}
		out = append(out, broker.Tenant{
			Name: t.Name, TokenURL: t.TokenURL, ClientID: t.ClientID,
			ClientSecret: t.ClientSecret, Scopes: t.Scopes, AuthStyle: style,
		})
	}
	return out
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
