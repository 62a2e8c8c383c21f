package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/internal/cli"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
)

// serve is `broker serve`: flags, config, logger and signals; the service
// itself is internal/daemon.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "broker config file (YAML); without it, one tenant \"default\" from KOGNIC_CREDENTIALS or KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET")
	dev := fs.Bool("dev", false, "development mode: start an embedded identity provider on loopback and a tenant \"demo\"")
	var listen listenFlags
	fs.Var(&listen, "listen", "gRPC listen address, host:port or unix:///path, overriding the config's listen; repeat it for one of each (default "+config.DefaultListen+")")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return cli.ErrUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	load := func() (*config.Config, error) { return loadConfig(*configPath, *dev, getenv, log) }
	cfg, err := load()
	if err != nil {
		return err
	}
	// With Load the daemon also re-reads the configuration when one of its
	// files changes.
	d, err := daemon.New(cfg, daemon.Options{
		Logger: log, Listen: listen, Dev: *dev, AuditOutput: stdout, Notice: stderr,
		UserAgent: "tokenbroker/" + version(), Version: version(), Load: load,
	})
	if err != nil {
		return err
	}
	defer d.Close()

	// SIGHUP re-reads the config file, or the environment's credentials file.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }()
	go func() {
		for range hup {
			// A refusal (daemon.ErrLowersSecurity) was logged by the daemon.
			if err := d.Reread(); err != nil && !errors.Is(err, daemon.ErrLowersSecurity) {
				log.Error("config reload failed; keeping the running configuration", "error", err)
			}
		}
	}()
	return d.Run(ctx)
}

// listenFlags are the --listen flags, in order.
type listenFlags []string

func (l *listenFlags) String() string     { return strings.Join(*l, ",") }
func (l *listenFlags) Set(v string) error { *l = append(*l, v); return nil }

// devOAuthListen is the token endpoint of `serve --dev` without a
// config file: beside the gRPC port, loopback only.
const devOAuthListen = "127.0.0.1:50052"

func loadConfig(path string, dev bool, getenv func(string) string, log *slog.Logger) (*config.Config, error) {
	// A tenant whose files fail to load fails the start; on a re-read it
	// keeps its running configuration (daemon.Reload).
	opts := config.Options{Logger: log, KeepTenantsOnFileError: true}
	switch {
	case path != "":
		return config.LoadWith(path, opts)
	case dev:
		// The dev IdP's tenant is added by the daemon; the admin listener
		// (status page, metrics) and the OAuth2 token endpoint are on
		// loopback, and ^C stops at once.
		return &config.Config{
			Listen:   config.DefaultListen,
			Admin:    config.Admin{Listen: config.DefaultAdminListen},
			OAuth:    config.OAuth{Listen: devOAuthListen},
			Shutdown: config.Shutdown{Timeout: config.DefaultShutdownTimeout},
		}, nil
	}
	lookup := func(k string) (string, bool) { v := getenv(k); return v, v != "" }
	return config.FromEnvWith(lookup, opts)
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
