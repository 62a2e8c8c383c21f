package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
)

// MinReloadInterval is the shortest tls.reload_interval and watch.interval.
const MinReloadInterval = time.Second

// ParseWith parses and validates a config file's contents, named name in
// errors, and reads the files it names relative to baseDir; credentials
// expired at o.Now are refused.
func ParseWith(data []byte, name, baseDir string, o Options) (*Config, error) {
	p := &parser{name: name, baseDir: baseDir, data: data, load: &load{
		now: o.now(), log: o.logger(), keep: o.KeepTenantsOnFileError, seen: map[string]bool{}, names: map[string]nameAt{},
	}}
	if len(data) > MaxFileSize {
		return nil, &Error{File: name, Err: fmt.Errorf("file is larger than %d bytes (1 MiB); point --config at the broker's YAML configuration itself", MaxFileSize)}
	}
	def := withDefaults(&Config{}) // what an absent key keeps
	d := fileDoc{Listen: listenDoc{entries: []string{def.Listen}}, Admin: def.Admin, Shutdown: def.Shutdown, Watch: watchDoc{Enabled: true}}
	if err := p.decode(&d, "add a tenants list (see the package documentation for an example)"); err != nil {
		return nil, err
	}
	if len(d.Tenants) == 0 && d.TenantsDir == "" && p.tree().ShortTag() == "!!null" {
		return nil, p.empty("add a tenants list (see the package documentation for an example)")
	}
	return p.config(&d)
}

// withDefaults sets the defaults of a file's or the environment's config.
func withDefaults(c *Config) *Config {
	c.Listen = DefaultListen
	c.Admin = Admin{Listen: DefaultAdminListen}
	c.Shutdown = Shutdown{Drain: DefaultShutdownDrain, Timeout: DefaultShutdownTimeout}
	return c
}

// parser validates one file of a configuration.
type parser struct {
	name    string // the file, for errors
	baseDir string // relative paths resolve against it
	data    []byte
	root    *yaml.Node // see tree
	*load
}

// load is what the files of one configuration share while it loads.
type load struct {
	now    time.Time
	log    *slog.Logger
	keep   bool // Options.KeepTenantsOnFileError
	strict bool // strict_file_permissions
	files  []string
	seen   map[string]bool   // files
	names  map[string]nameAt // tenant names, for duplicates
}

// nameAt is where a tenant name is set.
type nameAt struct {
	p     *parser
	field string
}

// config validates d, the decoded file, in one pass.
func (p *parser) config(d *fileDoc) (*Config, error) {
	p.strict = d.StrictFilePermissions
	cfg := &Config{
		name: p.name, StrictFilePermissions: d.StrictFilePermissions, Limits: d.Limits.Limits,
		InsecurePlaintext: d.InsecurePlaintext, Watch: Watch{Disabled: !d.Watch.Enabled, Interval: d.Watch.Interval},
		Admin: d.Admin, OAuth: d.OAuth, Shutdown: d.Shutdown,
	}
	var err error
	if err = p.listen(d, cfg); err != nil {
		return nil, err
	}
	if cfg.TLS, err = p.tls(d.TLS); err != nil {
		return nil, err
	}
	if cfg.Tenants, err = p.tenants(d, cfg); err != nil {
		return nil, err
	}
	if cfg.Callers, err = p.callers(d.Callers, cfg.TLS); err != nil {
		return nil, err
	}
	if len(cfg.Callers) > 0 {
		if k, v := p.at("callers"); v != nil { // nil if set through a merge key
			cfg.callers = &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{k, v}} // for ErrorAt
		}
	}
	if cfg.Audit, err = p.audit(d.Audit); err != nil {
		return nil, err
	}
	if fe, ok := errors.AsType[*limits.FieldError](d.Limits.Validate(d.Limits.keys...)); ok {
		return nil, p.errf("limits."+fe.Key, "%w", fe.Err)
	}
	if err := p.ops(d); err != nil {
		return nil, err
	}
	cfg.Files = p.files
	return cfg, nil
}

// ops checks the watch, admin, oauth and shutdown sections.
func (p *parser) ops(d *fileDoc) error {
	if d.Watch.Interval != 0 {
		if err := p.within("watch.interval", d.Watch.Interval, MinReloadInterval, math.MaxInt64); err != nil {
			return err
		}
	}
	for _, l := range []struct{ field, addr, eg string }{
		{"admin.listen", d.Admin.Listen, DefaultAdminListen}, {"oauth.listen", d.OAuth.Listen, "127.0.0.1:8443"},
	} {
		if l.addr == "" {
			continue
		}
		if err := checkHostPort(l.addr, l.eg); err != nil {
			return p.errf(l.field, "%w", err)
		}
	}
	for i, h := range d.Admin.Hosts {
		if !hostNameRE.MatchString(h) || strings.HasSuffix(h, ".") || len(h) > 253 {
			return p.errf(fmt.Sprintf("admin.hosts[%d]", i), "%q is not a host name; give the name clients put in the Host header, without scheme, port or wildcard, e.g. tokenbroker.monitoring.svc (IP literals and localhost are always accepted)", h)
		}
		d.Admin.Hosts[i] = strings.ToLower(h)
	}
	if err := p.within("shutdown.drain", d.Shutdown.Drain, 0, MaxShutdownDrain); err != nil {
		return err
	}
	return p.within("shutdown.timeout", d.Shutdown.Timeout, MinShutdownTimeout, MaxShutdownTimeout)
}

// hostNameRE is a DNS name as a Host header carries it, without port.
var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$`)

// within checks that the duration at field is in [min, max].
func (p *parser) within(field string, d, min, max time.Duration) error {
	switch {
	case d < min:
		return p.errf(field, "%s is too short; use at least %s", d, min)
	case d > max:
		return p.errf(field, "%s is too long; use at most %s", d, max)
	}
	return nil
}

func (p *parser) tls(t *TLS) (*TLS, error) {
	if t == nil {
		return nil, nil
	}
	for _, f := range []struct {
		key  string
		path *string
		fix  string // "": optional
	}{
		{"cert_file", &t.CertFile, "add the PEM certificate (chain) the broker presents"},
		{"key_file", &t.KeyFile, "add the PEM private key of cert_file"},
		{"client_ca_file", &t.ClientCAFile, ""},
	} {
		if *f.path == "" && f.fix != "" {
			return nil, p.required("tls", f.key, f.fix)
		} else if *f.path == "" {
			continue
		}
		field := "tls." + f.key
		*f.path = p.resolve(*f.path)
		var err error
		if f.key == "key_file" {
			err = p.secretFile(field, *f.path)
		}
		if err == nil {
			err = p.readable(field, *f.path)
		}
		if err != nil {
			return nil, err
		}
	}
	if t.RequireClientCert && t.ClientCAFile == "" {
		return nil, p.errf("tls.require_client_cert", "needs tls.client_ca_file; add the PEM bundle of the CAs that sign client certificates")
	}
	if t.ReloadInterval != 0 {
		return t, p.within("tls.reload_interval", t.ReloadInterval, MinReloadInterval, math.MaxInt64)
	}
	return t, nil
}

var idKeys = []string{"spiffe_id", "dns_name", "common_name", "api_key_sha256", "unix_uid", "unix_gid"}

func (p *parser) callers(list []*Caller, tls *TLS) ([]Caller, error) {
	if list == nil && !p.has("callers") {
		return nil, nil
	}
	if len(list) == 0 {
		return nil, p.errf("callers", "empty list; list at least one caller, or remove the key to serve only clients on this host, without authentication")
	}
	first := map[string]string{}
	callers := make([]Caller, 0, len(list))
	for i, c := range list {
		field := fmt.Sprintf("callers[%d]", i)
		switch {
		case c == nil:
			return nil, p.nothing(field, reflect.TypeFor[Caller]())
		case c.Name == "":
			return nil, p.required(field, "name", "add e.g. name: billing")
		}
		if f, dup := first[c.Name]; dup {
			return nil, p.errf(field+".name", "duplicate caller name %q (first on line %d); caller names must be unique", c.Name, p.line(f+".name"))
		}
		first[c.Name] = field
		if err := p.identity(c, field, tls); err != nil {
			return nil, err
		}
		if err := p.grants(c, field); err != nil {
			return nil, err
		}
		callers = append(callers, *c)
	}
	return callers, nil
}

// identity checks that exactly one identity names the caller, and its value.
func (p *parser) identity(c *Caller, field string, tls *TLS) error {
	var idKey string
	for i, set := range []bool{c.SPIFFEID != "", c.DNSName != "", c.CommonName != "", c.APIKeySHA256 != "", c.UnixUID != nil, c.UnixGID != nil} {
		if !set {
			continue
		}
		if idKey != "" {
			return p.keyErr(field, idKeys[i], "caller %q has both %s and %s; set exactly one of %s", c.Name, idKey, idKeys[i], strings.Join(idKeys, ", "))
		}
		idKey = idKeys[i]
	}
	idField := join(field, idKey)
	switch {
	case idKey == "":
		return p.errf(field, "caller %q has no identity; set exactly one of %s", c.Name, strings.Join(idKeys, ", "))
	case c.UsesSocket():
		if err := p.unixID(c, idField); err != nil {
			return err
		}
	case !c.UsesCertificate():
		// The value is never quoted: it might be the key itself.
		if len(c.APIKeySHA256) != 64 {
			return p.errf(idField, "must be the SHA-256 of the API key, 64 hex digits (printf %%s \"$KEY\" | sha256sum), got %d characters; never put the key itself in the config", len(c.APIKeySHA256))
		}
		if c.APIKeySHA256 = strings.ToLower(c.APIKeySHA256); strings.Trim(c.APIKeySHA256, "0123456789abcdef") != "" {
			return p.errf(idField, "must be the SHA-256 of the API key, 64 hex digits (0-9, a-f) only; never put the key itself in the config")
		}
	case tls == nil || tls.ClientCAFile == "":
		return p.errf(idField, "caller %q is identified by a client certificate, but tls.client_ca_file is not set; add a tls section with cert_file, key_file and client_ca_file (the CAs that sign client certificates)", c.Name)
	}
	return nil
}

// grants checks the caller's tenants and scopes lists.
func (p *parser) grants(c *Caller, field string) error {
	switch {
	case c.Tenants == nil:
		return p.errf(field, "caller %q: missing required key \"tenants\"; add the tenant globs it may use, e.g. tenants: [acme, \"team-*\"]", c.Name)
	case len(c.Tenants) == 0:
		return p.errf(field+".tenants", "empty list; give at least one tenant glob, e.g. [acme] or [\"team-*\"]")
	case c.Scopes != nil && len(c.Scopes) == 0:
		return p.errf(field+".scopes", "empty list; remove the key to allow every scope, or list the scope globs the caller may request, e.g. [\"read:*\"]")
	case c.Scopes == nil && p.has(field+".scopes"):
		// A key without a value is how a file written half-way ends: it
		// must not widen the caller to every scope.
		return p.errf(field+".scopes", "no value; remove the key to allow every scope, or list the scope globs the caller may request, e.g. [\"read:*\"]")
	}
	return nil
}

// overflowID is /proc/sys/kernel/overflowuid's default: the id the kernel
// gives a peer whose id the reader's user namespace does not map.
const overflowID = 65534

// unixID checks a caller's unix_uid or unix_gid (at field), and warns of
// ids that name more than one user: root's and the overflow id.
func (p *parser) unixID(c *Caller, field string) error {
	id, kind := c.UnixUID, "user"
	if id == nil {
		id, kind = c.UnixGID, "group"
	}
	if _, v := p.at(field); v != nil && v.ShortTag() == "!!float" { // yaml.v3 truncates it
		return p.errf(field, "must be a %s id, a whole number, got %s; write e.g. 1000", kind, v.Value)
	}
	if *id == 1<<32-1 {
		return p.errf(field, "4294967295 is (uid_t)-1, no one's id; give the number `id -u NAME` (or `id -g NAME`) prints")
	}
	var warn string
	switch *id {
	case 0:
		warn = "caller identified by id 0 (root): every process running as root that can reach the socket, in any container that mounts it, is this caller"
	case overflowID:
		warn = "caller identified by id 65534 (nobody, the kernel's overflow id): every peer whose id the broker's user namespace does not map shows as 65534 and is this caller"
	}
	if warn != "" {
		p.log.Warn(warn, "caller", c.Name, "config", fmt.Sprintf("%s:%d", p.name, p.line(field)), "field", field)
	}
	return nil
}

func (p *parser) audit(d *auditDoc) (Audit, error) {
	if d == nil {
		return Audit{}, nil
	}
	if d.Path == "" {
		return Audit{}, p.required("audit", "path", `set the file audit lines are appended to, or "-" for standard output`)
	}
	a := Audit{Path: d.Path}
	if d.Path != "-" {
		a.Path = p.resolve(d.Path)
	}
	switch d.Fsync {
	case "", "never":
	case "always":
		a.Fsync = AuditFsyncEachBatch
	default:
		var err error
		if a.Fsync, err = time.ParseDuration(d.Fsync); err != nil || a.Fsync < 10*time.Millisecond || a.Fsync > time.Minute {
			return Audit{}, p.errf("audit.fsync", "%q is not never, always or an interval from 10ms to 1m; write e.g. always or 1s", d.Fsync)
		}
	}
	return a, nil
}

// errf is an error at the field at path, on the line of its value.
func (p *parser) errf(field, format string, args ...any) error {
	return &Error{File: p.name, Line: p.line(field), Field: field, Err: fmt.Errorf(format, args...)}
}

// keyErr is an error about key of the mapping at field, on the key's line.
func (p *parser) keyErr(field, key, format string, args ...any) error {
	k, _ := p.at(join(field, key))
	e := &Error{File: p.name, Field: field, Err: fmt.Errorf(format, args...)}
	if k != nil {
		e.Line = k.Line
	}
	return e
}

// line is the line of the value at field; 0 if it is absent.
func (p *parser) line(field string) int {
	if _, v := p.at(field); v != nil {
		return v.Line
	}
	return 0
}

// nothing is the error for a null entry of a list of t.
func (p *parser) nothing(field string, t reflect.Type) error {
	return p.errf(field, "must be a mapping with keys %s, got nothing", strings.Join(keysOf(t), ", "))
}

// required is the error for a required key that is absent or empty.
func (p *parser) required(field, key, fix string) error {
	if p.has(join(field, key)) {
		return p.errf(join(field, key), "must not be empty")
	}
	return p.errf(field, "missing required key %q; %s", key, fix)
}

func (p *parser) resolve(path string) string {
	path, _ = creds.ExpandHome(path) // on error, the load names the unexpanded path
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(p.baseDir, path)
}

// addFile records a file the configuration is read from, once.
func (p *parser) addFile(path string) {
	if !p.seen[path] {
		p.seen[path] = true
		p.files = append(p.files, path)
	}
}

// readable checks that the file at path is a regular file that can be
// opened, and records it.
func (p *parser) readable(field, path string) error {
	p.addFile(path)
	f, err := creds.OpenFile(path)
	if err != nil {
		if pathErr, ok := errors.AsType[*fs.PathError](err); ok {
			err = pathErr.Err
		}
		return p.errf(field, "cannot read %s: %w", path, err)
	}
	return f.Close()
}

// secretFile checks that the secret file at path is not readable by group
// or others: a warning, or with strict_file_permissions an error.
func (p *parser) secretFile(field, path string) error {
	p.addFile(path)
	err := creds.CheckFileMode(path)
	pe, isPerm := errors.AsType[*creds.PermissionError](err)
	switch {
	case err == nil:
		return nil
	case !isPerm:
		if pathErr, ok := errors.AsType[*fs.PathError](err); ok {
			return p.errf(field, "cannot read %s: %w", path, pathErr.Err)
		}
		return p.errf(field, "%w", err)
	case p.strict:
		return p.errf(field, "%w (strict_file_permissions is true)", err)
	}
	p.log.Warn("secret file readable by group or others; strict_file_permissions: true makes this an error",
		"file", pe.Path, "mode", fmt.Sprintf("%04o", pe.Mode.Perm()), "fix", "chmod 600 "+pe.Path,
		"config", fmt.Sprintf("%s:%d", p.name, p.line(field)), "field", field)
	return nil
}
