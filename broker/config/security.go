package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// The security sections of the config file: tls, callers, audit, limits,
// and the checks on secret files and upstream CAs.

var (
	tlsKeys    = []string{"cert_file", "key_file", "client_ca_file", "require_client_cert", "reload_interval"}
	callerKeys = []string{"name", "spiffe_id", "dns_name", "common_name", "api_key_sha256", "tenants", "scopes"}
	idKeys     = []string{"spiffe_id", "dns_name", "common_name", "api_key_sha256"}
	auditKeys  = []string{"path", "fsync"}
	watchKeys  = []string{"enabled", "interval"}
	limitKeys  = []string{"requests_per_second", "burst", "max_streams_per_caller", "max_scopes_per_request", "max_message_bytes",
		"invalidations_per_second", "invalidation_burst", "denials_per_second_per_ip", "denial_burst_per_ip",
		"max_header_list_bytes", "max_streams_per_connection", "max_connections", "max_connections_per_ip",
		"max_open_streams_per_ip", "handshake_timeout", "max_connection_idle",
		"max_streams_per_ip", "max_anonymous_streams_per_ip", "max_streams_per_api_key",
		"new_scope_sets_per_second", "new_scope_set_burst", "max_idp_requests_per_host"}
)

// ConnLimits bound connections and what a peer may send before it is
// authenticated; part of Limits. Zero values mean the server's defaults.
type ConnLimits struct {
	InvalidationsPerSecond float64
	InvalidationBurst      int
	DenialsPerSecondPerIP  float64
	DenialBurstPerIP       int
	MaxHeaderListBytes     int
	MaxStreamsPerConn      int
	MaxConnections         int
	MaxConnectionsPerIP    int
	MaxOpenStreamsPerIP    int
	// MaxStreamsPerIP, MaxAnonymousStreamsPerIP and MaxStreamsPerAPIKey
	// cap every open call's stream from its HEADERS: per peer IP with
	// credentials, per peer IP without, and per API key over all IPs.
	MaxStreamsPerIP          int
	MaxAnonymousStreamsPerIP int
	MaxStreamsPerAPIKey      int
	HandshakeTimeout         time.Duration
	MaxConnectionIdle        time.Duration
}

// Bounds of the limits section.
const (
	// MinMessageBytes is the smallest limits.max_message_bytes: a valid
	// request (32 scopes of 256 bytes) is about 9 KiB.
	MinMessageBytes = 16 << 10
	// MaxMessageBytes is the largest limits.max_message_bytes.
	MaxMessageBytes = 4 << 20
	// MinReloadInterval is the shortest tls.reload_interval and
	// watch.interval.
	MinReloadInterval = time.Second
	maxLimit          = 1_000_000
	// MinHeaderListBytes and MaxHeaderListBytes bound
	// limits.max_header_list_bytes: an API key header and gRPC's own
	// headers fit in 4 KiB.
	MinHeaderListBytes = 4 << 10
	MaxHeaderListBytes = 1 << 20
)

// boolean returns the value of e, which must be true or false.
func (p *parser) boolean(e entry, field string) (bool, error) {
	if e.val.Kind != yaml.ScalarNode || e.val.ShortTag() != "!!bool" {
		return false, p.errf(e.val, field, "must be true or false, got %s", describe(e.val))
	}
	var b bool
	if err := e.val.Decode(&b); err != nil {
		return false, p.errf(e.val, field, "must be true or false, got %s", describe(e.val))
	}
	return b, nil
}

// secretFile checks that the secret file at path is not readable by group
// or others: a warning, or with strict_file_permissions an error.
func (p *parser) secretFile(n *yaml.Node, field, path string) error {
	p.addFile(path)
	err := creds.CheckFileMode(path)
	if err == nil {
		return nil
	}
	pe, ok := errors.AsType[*creds.PermissionError](err)
	switch {
	case !ok:
		if pathErr, ok := errors.AsType[*fs.PathError](err); ok {
			return p.errf(n, field, "cannot read %s: %w", path, pathErr.Err)
		}
		return p.errf(n, field, "%w", err)
	case p.strict:
		return p.errf(n, field, "%w (strict_file_permissions is true)", err)
	}
	p.log.Warn("secret file readable by group or others; strict_file_permissions: true makes this an error",
		"file", pe.Path, "mode", fmt.Sprintf("%04o", pe.Mode.Perm()), "fix", "chmod 600 "+pe.Path,
		"config", fmt.Sprintf("%s:%d", p.name, n.Line), "field", field)
	return nil
}

// addFiles records the files of paths (addFile).
func (p *parser) addFiles(paths []pathAt) {
	for _, pa := range paths {
		p.addFile(pa.path)
	}
}

// addFile records a file the configuration is read from, once.
func (p *parser) addFile(path string) {
	if !slices.Contains(p.files, path) {
		p.files = append(p.files, path)
	}
}

// readable checks that the file at path is a regular file that can be
// opened.
func (p *parser) readable(n *yaml.Node, field, path string) error {
	p.addFile(path)
	f, err := creds.OpenFile(path)
	if err != nil {
		if pathErr, ok := errors.AsType[*fs.PathError](err); ok {
			err = pathErr.Err
		}
		return p.errf(n, field, "cannot read %s: %w", path, err)
	}
	return f.Close()
}

// path returns the resolved path in e.
func (p *parser) path(e entry, field string) (string, error) {
	s, err := p.str(e, field)
	if err != nil {
		return "", err
	}
	return p.resolvePath(s), nil
}

// caFile reads the tenant's ca_file into the root CAs it will use.
func (p *parser) caFile(e entry, field, tenant string) (string, *x509.CertPool, error) {
	path, err := p.path(e, field)
	if err != nil {
		return "", nil, err
	}
	if err := p.readable(e.val, field, path); err != nil {
		return "", nil, &tenantFileError{err}
	}
	pool, err := upstream.RootCAs(path)
	if err != nil {
		return "", nil, &tenantFileError{p.errf(e.val, field, "tenant %q: %s holds no PEM certificate; give the private CA's certificate in PEM (-----BEGIN CERTIFICATE-----)", tenant, path)}
	}
	return path, pool, nil
}

func (p *parser) tls(e entry) (*TLS, error) {
	m, err := p.mapping(e.val, "tls", tlsKeys)
	if err != nil {
		return nil, err
	}
	t := &TLS{}
	files := []struct {
		key  string
		dst  *string
		hint string
	}{
		{"cert_file", &t.CertFile, "add the PEM certificate (chain) the broker presents"},
		{"key_file", &t.KeyFile, "add the PEM private key of cert_file"},
		{"client_ca_file", &t.ClientCAFile, ""},
	}
	for _, f := range files {
		fe, ok := m[f.key]
		if !ok {
			if f.hint != "" {
				return nil, p.errf(e.val, "tls", "missing required key %q; %s", f.key, f.hint)
			}
			continue
		}
		field := "tls." + f.key
		if *f.dst, err = p.path(fe, field); err != nil {
			return nil, err
		}
		if f.key == "key_file" {
			err = p.secretFile(fe.val, field, *f.dst)
		}
		if err == nil {
			err = p.readable(fe.val, field, *f.dst)
		}
		if err != nil {
			return nil, err
		}
	}
	if re, ok := m["require_client_cert"]; ok {
		if t.RequireClientCert, err = p.boolean(re, "tls.require_client_cert"); err != nil {
			return nil, err
		}
		if t.RequireClientCert && t.ClientCAFile == "" {
			return nil, p.errf(re.val, "tls.require_client_cert", "needs tls.client_ca_file; add the PEM bundle of the CAs that sign client certificates")
		}
	}
	if ie, ok := m["reload_interval"]; ok {
		if t.ReloadInterval, err = p.interval(ie, "tls.reload_interval"); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// interval reads a duration of at least MinReloadInterval.
func (p *parser) interval(e entry, field string) (time.Duration, error) {
	s, err := p.str(e, field)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, p.errf(e.val, field, "%q is not a duration; write e.g. 30s or 5m", s)
	case d < MinReloadInterval:
		return 0, p.errf(e.val, field, "%s is too short; use at least %s", d, MinReloadInterval)
	}
	return d, nil
}

func (p *parser) watch(e entry) (Watch, error) {
	m, err := p.mapping(e.val, "watch", watchKeys)
	if err != nil {
		return Watch{}, err
	}
	var w Watch
	if ee, ok := m["enabled"]; ok {
		on, err := p.boolean(ee, "watch.enabled")
		if err != nil {
			return Watch{}, err
		}
		w.Disabled = !on
	}
	if ie, ok := m["interval"]; ok {
		if w.Interval, err = p.interval(ie, "watch.interval"); err != nil {
			return Watch{}, err
		}
	}
	return w, nil
}

func (p *parser) audit(e entry) (Audit, error) {
	m, err := p.mapping(e.val, "audit", auditKeys)
	if err != nil {
		return Audit{}, err
	}
	pe, ok := m["path"]
	if !ok {
		return Audit{}, p.errf(e.val, "audit", "missing required key \"path\"; set the file audit lines are appended to, or \"-\" for standard output")
	}
	s, err := p.str(pe, "audit.path")
	if err != nil {
		return Audit{}, err
	}
	a := Audit{Path: s}
	if s != "-" {
		a.Path = p.resolvePath(s)
	}
	if fe, ok := m["fsync"]; ok {
		v, err := p.str(fe, "audit.fsync")
		if err != nil {
			return Audit{}, err
		}
		switch v {
		case "never":
		case "always":
			a.Fsync = AuditFsyncEachBatch
		default:
			d, err := time.ParseDuration(v)
			if err != nil || d < 10*time.Millisecond || d > time.Minute {
				return Audit{}, p.errf(fe.val, "audit.fsync", "%q is not never, always or an interval from 10ms to 1m; write e.g. always or 1s", v)
			}
			a.Fsync = d
		}
	}
	return a, nil
}

func (p *parser) limits(e entry) (Limits, error) {
	m, err := p.mapping(e.val, "limits", limitKeys)
	if err != nil {
		return Limits{}, err
	}
	var l Limits
	floats := []struct {
		key string
		dst *float64
	}{
		{"requests_per_second", &l.RequestsPerSecond},
		{"invalidations_per_second", &l.InvalidationsPerSecond},
		{"denials_per_second_per_ip", &l.DenialsPerSecondPerIP},
		{"new_scope_sets_per_second", &l.NewScopeSetsPerSecond},
	}
	for _, f := range floats {
		if ne, ok := m[f.key]; ok {
			if *f.dst, err = p.positive(ne, "limits."+f.key, maxLimit); err != nil {
				return Limits{}, err
			}
		}
	}
	durations := []struct {
		key string
		dst *time.Duration
		min time.Duration
	}{
		{"handshake_timeout", &l.HandshakeTimeout, 100 * time.Millisecond},
		{"max_connection_idle", &l.MaxConnectionIdle, time.Second},
	}
	for _, f := range durations {
		if de, ok := m[f.key]; ok {
			field := "limits." + f.key
			s, err := p.str(de, field)
			if err != nil {
				return Limits{}, err
			}
			d, err := time.ParseDuration(s)
			switch {
			case err != nil:
				return Limits{}, p.errf(de.val, field, "%q is not a duration; write e.g. 10s or 5m", s)
			case d < f.min:
				return Limits{}, p.errf(de.val, field, "%s is too short; use at least %s", d, f.min)
			}
			*f.dst = d
		}
	}
	ints := []struct {
		key      string
		dst      *int
		min, max int
	}{
		{"burst", &l.Burst, 1, maxLimit},
		{"max_streams_per_caller", &l.MaxStreamsPerCaller, 1, maxLimit},
		{"max_scopes_per_request", &l.MaxScopesPerRequest, 1, names.MaxScopes},
		{"max_message_bytes", &l.MaxMessageBytes, MinMessageBytes, MaxMessageBytes},
		{"invalidation_burst", &l.InvalidationBurst, 1, maxLimit},
		{"denial_burst_per_ip", &l.DenialBurstPerIP, 1, maxLimit},
		{"max_header_list_bytes", &l.MaxHeaderListBytes, MinHeaderListBytes, MaxHeaderListBytes},
		{"max_streams_per_connection", &l.MaxStreamsPerConn, 1, maxLimit},
		{"max_connections", &l.MaxConnections, 1, maxLimit},
		{"max_connections_per_ip", &l.MaxConnectionsPerIP, 1, maxLimit},
		{"max_open_streams_per_ip", &l.MaxOpenStreamsPerIP, 1, maxLimit},
		{"max_streams_per_ip", &l.MaxStreamsPerIP, 1, maxLimit},
		{"max_anonymous_streams_per_ip", &l.MaxAnonymousStreamsPerIP, 1, maxLimit},
		{"max_streams_per_api_key", &l.MaxStreamsPerAPIKey, 1, maxLimit},
		{"new_scope_set_burst", &l.NewScopeSetBurst, 1, maxLimit},
		{"max_idp_requests_per_host", &l.MaxIdPRequestsPerHost, 1, 10000},
	}
	for _, f := range ints {
		if ie, ok := m[f.key]; ok {
			if *f.dst, err = p.integer(ie, "limits."+f.key, f.min, f.max); err != nil {
				return Limits{}, err
			}
		}
	}
	return l, nil
}

// positive returns a number in (0, max].
func (p *parser) positive(e entry, field string, max float64) (float64, error) {
	tag := e.val.ShortTag()
	if e.val.Kind != yaml.ScalarNode || tag != "!!int" && tag != "!!float" {
		return 0, p.errf(e.val, field, "must be a number, got %s", describe(e.val))
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(e.val.Value, "_", ""), 64)
	if err != nil || math.IsNaN(f) || f <= 0 || f > max {
		return 0, p.errf(e.val, field, "must be a number greater than 0 and at most %g, got %s", max, e.val.Value)
	}
	return f, nil
}

// integer returns a whole number in [min, max].
func (p *parser) integer(e entry, field string, min, max int) (int, error) {
	if e.val.Kind != yaml.ScalarNode || e.val.ShortTag() != "!!int" {
		return 0, p.errf(e.val, field, "must be a whole number, got %s", describe(e.val))
	}
	var n int
	if err := e.val.Decode(&n); err != nil || n < min || n > max {
		return 0, p.errf(e.val, field, "must be from %d to %d, got %s", min, max, e.val.Value)
	}
	return n, nil
}

// describe is kindName, with the value of a number or boolean.
func describe(n *yaml.Node) string {
	switch n.ShortTag() {
	case "!!int", "!!float", "!!bool":
		if n.Kind == yaml.ScalarNode {
			return n.Value
		}
	case "!!str":
		if n.Kind == yaml.ScalarNode {
			return fmt.Sprintf("the string %q", n.Value)
		}
	}
	return kindName(n)
}
