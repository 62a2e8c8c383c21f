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
	"github.com/tokenbroker/tokenbroker/broker/limits"
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
	limitKeys  = limits.Keys()
)

// Bounds of the limits section.
const (
	// MinReloadInterval is the shortest tls.reload_interval and
	// watch.interval.
	MinReloadInterval = time.Second
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

// limits decodes the limits section; limits.Limits declares its keys,
// defaults and bounds.
func (p *parser) limits(e entry) (limits.Limits, error) {
	m, err := p.mapping(e.val, "limits", limitKeys)
	if err != nil {
		return limits.Limits{}, err
	}
	var l limits.Limits
	keys := make([]string, 0, len(m))
	for key, ve := range m {
		keys = append(keys, key)
		field := "limits." + key
		switch dst := l.Ptr(key).(type) {
		case *float64:
			*dst, err = p.number(ve, field)
		case *int:
			*dst, err = p.whole(ve, field)
		case *time.Duration:
			*dst, err = p.duration(ve, field, 0, math.MaxInt64)
		}
		if err != nil {
			return limits.Limits{}, err
		}
	}
	if fe, ok := errors.AsType[*limits.FieldError](l.Validate(keys...)); ok {
		return limits.Limits{}, p.errf(m[fe.Key].val, "limits."+fe.Key, "%w", fe.Err)
	}
	return l, nil
}

// number returns a number; its bounds are checked by the caller.
func (p *parser) number(e entry, field string) (float64, error) {
	tag := e.val.ShortTag()
	if e.val.Kind != yaml.ScalarNode || tag != "!!int" && tag != "!!float" {
		return 0, p.errf(e.val, field, "must be a number, got %s", describe(e.val))
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(e.val.Value, "_", ""), 64)
	if err != nil || math.IsNaN(f) {
		return 0, p.errf(e.val, field, "must be a number, got %s", e.val.Value)
	}
	return f, nil
}

// whole returns a whole number; its bounds are checked by the caller.
func (p *parser) whole(e entry, field string) (int, error) {
	var n int
	if e.val.Kind != yaml.ScalarNode || e.val.ShortTag() != "!!int" || e.val.Decode(&n) != nil {
		return 0, p.errf(e.val, field, "must be a whole number, got %s", describe(e.val))
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
