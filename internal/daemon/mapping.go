package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/credentials"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/guard"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/server"
)

// The mapping of the config file's sections to the domain packages.

// withListen returns a copy of cfg (tenants copied too) with Listen
// replaced by listen if that is set.
func withListen(cfg *config.Config, listen string) *config.Config {
	c := *cfg
	c.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
	if listen != "" {
		c.Listen = listen
	}
	return &c
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

// brokerTenants maps the config's tenants to the core's; the config
// parser has already read each ca_file into RootCAs.
func brokerTenants(ts []config.Tenant) []broker.Tenant {
	out := make([]broker.Tenant, 0, len(ts))
	for _, t := range ts {
		var fallbacks []upstream.Credential
		for _, f := range t.Fallbacks {
			fallbacks = append(fallbacks, upstream.Credential{Name: f.Source, ClientID: f.ClientID, ClientSecret: f.ClientSecret})
		}
		out = append(out, broker.Tenant{
			Name: t.Name, TokenURL: t.TokenURL, ClientID: t.ClientID,
			ClientSecret: t.ClientSecret, Scopes: t.Scopes, AuthStyle: t.AuthStyle.OAuth2(), RootCAs: t.RootCAs,
			Fallbacks: fallbacks,
		})
	}
	return out
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

// openAudit opens the audit trail: the file at path, or out for "" and "-".
func openAudit(path string, out io.Writer, log *slog.Logger) (*audit.Logger, error) {
	if path == "" || path == "-" {
		return audit.New(out), nil
	}
	l, err := audit.Open(path)
	if err != nil {
		return nil, err
	}
	if err := credentials.CheckFileMode(path); err != nil {
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

// isLoopbackAddr applies upstream's one loopback rule to a host:port.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && upstream.IsLoopbackHost(host)
}
