package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

var (
	topKeys    = []string{"listen", "tenants", "strict_file_permissions", "tls", "callers", "audit", "limits", "insecure_plaintext", "watch", "admin", "shutdown"}
	tenantKeys = []string{"name", "auth_server", "token_url", "credentials_file", "credentials_files", "client_id", "client_secret_file", "client_secret_files", "scopes", "auth_style", "allow_insecure_http", "ca_file"}
)

// Parse parses and validates a config file's contents. name is used in
// errors. Relative credentials_file and client_secret_file paths resolve
// against baseDir (normally the config file's directory). The credential
// files are read, and credentials already expired rejected (the clock is
// Options.Now in ParseWith).
//
// The YAML is walked as a yaml.Node tree rather than decoded into structs:
// that is what lets every error, unknown keys included, carry its line and
// field path. (yaml.Decoder.KnownFields does not apply to Node decoding.)
//
// Warnings are discarded; see ParseWith.
func Parse(data []byte, name, baseDir string) (*Config, error) {
	return ParseWith(data, name, baseDir, Options{})
}

// ParseWith is Parse with options. Besides Parse's checks it refuses an
// upstream URL that is not https (unless its host is loopback or the
// tenant sets allow_insecure_http), and warns on o.Logger about each
// secret file (credentials_file, client_secret_file, tls.key_file) that
// group or others can read, or fails if strict_file_permissions is set.
func ParseWith(data []byte, name, baseDir string, o Options) (*Config, error) {
	p := &parser{name: name, baseDir: baseDir, now: o.now(), log: o.logger(), lines: map[string]int{}, keep: o.KeepTenantsOnFileError}
	if len(data) > MaxFileSize {
		return nil, p.errf(nil, "", "file is larger than %d bytes (1 MiB); point --config at the broker's YAML configuration itself", MaxFileSize)
	}
	root, err := p.document(data)
	if err != nil {
		return nil, err
	}
	top, err := p.mapping(root, "", topKeys)
	if err != nil {
		return nil, err
	}
	cfg := withDefaults(&Config{name: name, lines: p.lines})
	if e, ok := top["strict_file_permissions"]; ok {
		if p.strict, err = p.boolean(e, "strict_file_permissions"); err != nil {
			return nil, err
		}
		cfg.StrictFilePermissions = p.strict
	}
	if e, ok := top["listen"]; ok {
		if cfg.Listen, err = p.listen(e); err != nil {
			return nil, err
		}
	}
	if e, ok := top["tls"]; ok {
		if cfg.TLS, err = p.tls(e); err != nil {
			return nil, err
		}
	}
	e, ok := top["tenants"]
	if !ok || isNull(e.val) || e.val.Kind == yaml.SequenceNode && len(e.val.Content) == 0 {
		return nil, p.errf(e.key, "tenants", "at least one tenant is required; add an entry with a name and a credentials_file")
	}
	if e.val.Kind != yaml.SequenceNode {
		return nil, p.errf(e.val, "tenants", "must be a list of tenants, got %s", kindName(e.val))
	}
	firstLine := map[string]int{}
	for i, n := range e.val.Content {
		t, err := p.tenant(resolve(n), fmt.Sprintf("tenants[%d]", i), firstLine)
		if fe, ok := errors.AsType[*tenantFileError](err); ok {
			if !p.keep {
				return nil, fe.err
			}
			t, err = Tenant{Name: t.Name, LoadErr: fe.err}, nil
		}
		if err != nil {
			return nil, err
		}
		cfg.Tenants = append(cfg.Tenants, t)
	}
	if e, ok := top["callers"]; ok {
		if cfg.Callers, err = p.callers(e, cfg.TLS); err != nil {
			return nil, err
		}
	}
	if e, ok := top["audit"]; ok {
		if cfg.Audit, err = p.audit(e); err != nil {
			return nil, err
		}
	}
	if e, ok := top["limits"]; ok {
		if cfg.Limits, err = p.limits(e); err != nil {
			return nil, err
		}
	}
	if e, ok := top["insecure_plaintext"]; ok {
		if cfg.InsecurePlaintext, err = p.boolean(e, "insecure_plaintext"); err != nil {
			return nil, err
		}
	}
	if e, ok := top["watch"]; ok {
		if cfg.Watch, err = p.watch(e); err != nil {
			return nil, err
		}
	}
	cfg.Files = p.files
	if e, ok := top["admin"]; ok {
		if cfg.Admin, err = p.admin(e); err != nil {
			return nil, err
		}
	}
	if e, ok := top["shutdown"]; ok {
		if cfg.Shutdown, err = p.shutdown(e); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// withDefaults sets the defaults of a file's or the environment's config.
func withDefaults(c *Config) *Config {
	c.Listen = DefaultListen
	c.Admin = Admin{Listen: DefaultAdminListen}
	c.Shutdown = Shutdown{Drain: DefaultShutdownDrain, Timeout: DefaultShutdownTimeout}
	return c
}

type parser struct {
	name    string
	baseDir string
	now     time.Time
	strict  bool
	log     *slog.Logger
	lines   map[string]int // callers field → line, for Config.ErrorAt
	files   []string       // files read, for Config.Files
	keep    bool           // Options.KeepTenantsOnFileError
}

// tenantFileError marks a failure to load one of a tenant's own files,
// which Options.KeepTenantsOnFileError confines to that tenant.
type tenantFileError struct{ err error }

func (e *tenantFileError) Error() string { return e.err.Error() }
func (e *tenantFileError) Unwrap() error { return e.err }

// entry is a key and its value in a YAML mapping.
type entry struct{ key, val *yaml.Node }

func (p *parser) errf(n *yaml.Node, field, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: p.name, Line: line, Field: field, Err: fmt.Errorf(format, args...)}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document decodes exactly one non-empty YAML document and returns its root.
func (p *parser) document(data []byte) (*yaml.Node, error) {
	empty := p.errf(nil, "", "file is empty; add a tenants list (see the package documentation for an example)")
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, empty
		}
		return nil, p.syntaxErr(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, p.errf(&extra, "", "more than one YAML document; keep a single document (remove the \"---\" separator)")
	case !errors.Is(err, io.EOF):
		return nil, p.syntaxErr(err)
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, empty
	}
	return resolve(doc.Content[0]), nil
}

func (p *parser) syntaxErr(err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: p.name, Line: line, Err: fmt.Errorf("invalid YAML: %s", m[2])}
	}
	return &Error{File: p.name, Err: fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))}
}

// mapping checks that n is a mapping whose keys are all allowed and unique.
func (p *parser) mapping(n *yaml.Node, field string, allowed []string) (map[string]entry, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, field, "must be a mapping with keys %s, got %s", strings.Join(allowed, ", "), kindName(n))
	}
	m := make(map[string]entry, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		key := k.Value
		switch {
		case k.Kind != yaml.ScalarNode:
			return nil, p.errf(k, field, "keys must be plain strings; allowed keys: %s", strings.Join(allowed, ", "))
		case key == "client_secret":
			return nil, p.errf(k, field, "unknown key %q; secrets do not belong in the config file: write the secret to a file and set client_secret_file", key)
		case !slices.Contains(allowed, key):
			return nil, p.errf(k, field, "unknown key %q; allowed keys: %s", key, strings.Join(allowed, ", "))
		}
		if prev, dup := m[key]; dup {
			return nil, p.errf(k, join(field, key), "duplicate key (first on line %d); remove one", prev.key.Line)
		}
		m[key] = entry{k, v}
	}
	return m, nil
}

// str returns the value of e, which must be a non-empty scalar.
func (p *parser) str(e entry, field string) (string, error) {
	if e.val.Kind != yaml.ScalarNode || isNull(e.val) {
		return "", p.errf(e.val, field, "must be a string, got %s", kindName(e.val))
	}
	if strings.TrimSpace(e.val.Value) == "" {
		return "", p.errf(e.val, field, "must not be empty")
	}
	return e.val.Value, nil
}

func (p *parser) listen(e entry) (string, error) {
	return p.hostPort(e, "listen", DefaultListen)
}

// hostPort returns a host:port whose port is a number; example is shown
// in the error.
func (p *parser) hostPort(e entry, field, example string) (string, error) {
	s, err := p.str(e, field)
	if err != nil {
		return "", err
	}
	_, port, err := net.SplitHostPort(s)
	if err == nil {
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			err = fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
	}
	if err != nil {
		msg := err.Error()
		if ae, ok := errors.AsType[*net.AddrError](err); ok {
			msg = ae.Err
		}
		return "", p.errf(e.val, field, "%q is not host:port (%s); use e.g. %s", s, msg, example)
	}
	return s, nil
}

func (p *parser) resolvePath(path string) string {
	path, _ = creds.ExpandHome(path) // on error, the load names the unexpanded path
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(p.baseDir, path)
}

// resolve follows YAML aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a string"
	}
	return "an unsupported YAML node"
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}
