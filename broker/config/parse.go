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
	"github.com/tokenbroker/tokenbroker/broker/kognic"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

var (
	topKeys    = []string{"listen", "tenants", "strict_file_permissions", "tls", "callers", "audit", "limits", "insecure_plaintext", "watch", "admin", "shutdown"}
	tenantKeys = []string{"name", "auth_server", "token_url", "credentials_file", "credentials_files", "client_id", "client_secret_file", "client_secret_files", "scopes", "auth_style", "allow_insecure_http", "ca_file"}
)

// Parse parses and validates a config file's contents. name is used in
// errors. Relative credentials_file and client_secret_file paths resolve
// against baseDir (normally the config file's directory). The credential
// files are read, and credentials whose expiry is not after now rejected.
//
// The YAML is walked as a yaml.Node tree rather than decoded into structs:
// that is what lets every error, unknown keys included, carry its line and
// field path. (yaml.Decoder.KnownFields does not apply to Node decoding.)
//
// Warnings are discarded; see ParseWith.
func Parse(data []byte, name, baseDir string, now time.Time) (*Config, error) {
	return ParseWith(data, name, baseDir, Options{Now: now})
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

var (
	adminKeys    = []string{"listen"}
	shutdownKeys = []string{"drain", "timeout"}
)

func (p *parser) admin(e entry) (Admin, error) {
	m, err := p.mapping(e.val, "admin", adminKeys)
	if err != nil {
		return Admin{}, err
	}
	a := Admin{Listen: DefaultAdminListen}
	if le, ok := m["listen"]; ok {
		if le.val.Kind == yaml.ScalarNode && le.val.ShortTag() == "!!str" && le.val.Value == "" {
			return Admin{}, nil // explicitly disabled
		}
		if a.Listen, err = p.hostPort(le, "admin.listen", DefaultAdminListen); err != nil {
			return Admin{}, err
		}
	}
	return a, nil
}

func (p *parser) shutdown(e entry) (Shutdown, error) {
	m, err := p.mapping(e.val, "shutdown", shutdownKeys)
	if err != nil {
		return Shutdown{}, err
	}
	s := Shutdown{Drain: DefaultShutdownDrain, Timeout: DefaultShutdownTimeout}
	if de, ok := m["drain"]; ok {
		if s.Drain, err = p.duration(de, "shutdown.drain", 0, MaxShutdownDrain); err != nil {
			return Shutdown{}, err
		}
	}
	if te, ok := m["timeout"]; ok {
		if s.Timeout, err = p.duration(te, "shutdown.timeout", MinShutdownTimeout, MaxShutdownTimeout); err != nil {
			return Shutdown{}, err
		}
	}
	return s, nil
}

// duration returns a duration string such as "5s" in [min, max].
func (p *parser) duration(e entry, field string, min, max time.Duration) (time.Duration, error) {
	s, err := p.str(e, field)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, p.errf(e.val, field, "%q is not a duration; write e.g. 10s or 500ms", s)
	case d < min:
		return 0, p.errf(e.val, field, "%s is too short; use at least %s", d, min)
	case d > max:
		return 0, p.errf(e.val, field, "%s is too long; use at most %s", d, max)
	}
	return d, nil
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

func (p *parser) tenant(n *yaml.Node, field string, firstLine map[string]int) (Tenant, error) {
	m, err := p.mapping(n, field, tenantKeys)
	if err != nil {
		return Tenant{}, err
	}
	t := Tenant{AuthStyle: AuthStyleBody}

	e, ok := m["name"]
	if !ok {
		return Tenant{}, p.errf(n, field, "missing required key \"name\"; add e.g. name: acme")
	}
	if t.Name, err = p.str(e, field+".name"); err != nil {
		return Tenant{}, err
	}
	if err := names.ValidTenant(t.Name); err != nil {
		return Tenant{}, p.errf(e.val, field+".name", "%w", err)
	}
	if line, dup := firstLine[t.Name]; dup {
		return Tenant{}, p.errf(e.val, field+".name", "duplicate tenant name %q (first on line %d); tenant names must be unique", t.Name, line)
	}
	firstLine[t.Name] = e.val.Line

	if e, ok := m["allow_insecure_http"]; ok {
		if t.AllowInsecureHTTP, err = p.boolean(e, field+".allow_insecure_http"); err != nil {
			return Tenant{}, err
		}
	}
	if t.TokenURL, err = p.tokenURL(m, field, t.AllowInsecureHTTP); err != nil {
		return Tenant{}, err
	}
	if e, ok := m["ca_file"]; ok {
		if t.CAFile, t.RootCAs, err = p.caFile(e, field+".ca_file", t.Name); err != nil {
			return t, err
		}
	}
	if e, ok := m["auth_style"]; ok {
		s, err := p.str(e, field+".auth_style")
		if err != nil {
			return Tenant{}, err
		}
		switch t.AuthStyle = AuthStyle(s); t.AuthStyle {
		case AuthStyleBody, AuthStyleBasic:
		default:
			return Tenant{}, p.errf(e.val, field+".auth_style", "%q is not allowed; use %q (client_secret_post, the default) or %q (client_secret_basic)", s, AuthStyleBody, AuthStyleBasic)
		}
	}
	var scopes []string
	if e, ok := m["scopes"]; ok {
		if scopes, err = p.scopes(e, field+".scopes"); err != nil {
			return Tenant{}, err
		}
	}
	if err := p.credentials(m, n, field, &t, len(scopes) > 0); err != nil {
		return t, err
	}
	if len(scopes) > 0 {
		t.Scopes = scopes
	}
	return t, nil
}

func (p *parser) tokenURL(m map[string]entry, field string, allowInsecure bool) (string, error) {
	server, hasServer := m["auth_server"]
	tokenURL, hasToken := m["token_url"]
	switch {
	case hasServer && hasToken:
		return "", p.errf(tokenURL.key, field, "auth_server and token_url are mutually exclusive; set auth_server (%s is appended) or the full token_url, not both", kognic.TokenPath)
	case hasToken:
		s, err := p.str(tokenURL, field+".token_url")
		if err != nil {
			return "", err
		}
		if err := upstream.CheckURL(s, upstream.URLRules{AllowInsecureHTTP: allowInsecure}); errors.Is(err, upstream.ErrInsecureURL) {
			return "", p.errf(tokenURL.val, field+".token_url", "%w", err)
		} else if err != nil {
			return "", p.errf(tokenURL.val, field+".token_url", "%v; use the full token endpoint, e.g. https://idp.example.com/oauth2/token", err)
		}
		return s, nil
	case hasServer:
		s, err := p.str(server, field+".auth_server")
		if err != nil {
			return "", err
		}
		if err := upstream.CheckURL(s, upstream.URLRules{Base: true, AllowInsecureHTTP: allowInsecure}); errors.Is(err, upstream.ErrInsecureURL) {
			return "", p.errf(server.val, field+".auth_server", "%w", err)
		} else if err != nil {
			return "", p.errf(server.val, field+".auth_server", "%v; use e.g. %s", err, kognic.DefaultAuthServer)
		}
		return kognic.TokenURL(s), nil
	}
	return kognic.TokenURL(kognic.DefaultAuthServer), nil
}

// scopes validates a scopes list, reporting the line of a bad element.
func (p *parser) scopes(e entry, field string) ([]string, error) {
	if isNull(e.val) {
		return nil, nil
	}
	if e.val.Kind != yaml.SequenceNode {
		return nil, p.errf(e.val, field, "must be a list of scopes, got %s; write e.g. [read:inputs, write:inputs]", kindName(e.val))
	}
	var scopes []string
	for i, n := range e.val.Content {
		n = resolve(n)
		f := fmt.Sprintf("%s[%d]", field, i)
		if n.Kind != yaml.ScalarNode || isNull(n) {
			return nil, p.errf(n, f, "must be a string, got %s", kindName(n))
		}
		if err := names.ValidScope(n.Value); err != nil {
			return nil, p.errf(n, f, "%w", err)
		}
		scopes = append(scopes, n.Value)
	}
	scopes, err := names.NormalizeScopes(scopes)
	if err != nil {
		return nil, p.errf(e.val, field, "%w", err)
	}
	return scopes, nil
}

// credentials resolves the tenant's client credentials into t. The
// credentials file's scopes are checked only when they will be used, that
// is unless the tenant sets its own.
//
// During a secret rotation the plural keys credentials_files and
// client_secret_files take a list, newest first: the first entry is the
// tenant's credential and the others its Fallbacks.
func (p *parser) credentials(m map[string]entry, n *yaml.Node, field string, t *Tenant, ownScopes bool) error {
	file, hasFile := m["credentials_file"]
	files, hasFiles := m["credentials_files"]
	id, hasID := m["client_id"]
	secret, hasSecret := m["client_secret_file"]
	secrets, hasSecrets := m["client_secret_files"]
	kognic, generic := hasFile || hasFiles, hasID || hasSecret || hasSecrets
	switch {
	case hasFile && hasFiles:
		return p.errf(files.key, field, "credentials_file and credentials_files are mutually exclusive; during a rotation list both files under credentials_files, newest first")
	case hasSecret && hasSecrets:
		return p.errf(secrets.key, field, "client_secret_file and client_secret_files are mutually exclusive; during a rotation list both files under client_secret_files, newest first")
	case kognic && generic:
		kk := "credentials_file"
		if hasFiles {
			kk = "credentials_files"
		}
		g := id
		switch {
		case hasID:
		case hasSecret:
			g = secret
		default:
			g = secrets
		}
		return p.errf(g.key, field, "%s and %s are mutually exclusive; use either a Kognic credentials_file, or client_id with client_secret_file", kk, g.key.Value)
	case hasID && !hasSecret && !hasSecrets:
		return p.errf(id.key, field, "client_id is set but client_secret_file is missing; add client_secret_file naming a file that holds the client secret")
	case (hasSecret || hasSecrets) && !hasID:
		k := secret.key
		if hasSecrets {
			k = secrets.key
		}
		return p.errf(k, field, "%s is set but client_id is missing; add client_id", k.Value)
	case !kognic && !generic:
		return p.errf(n, field, "no credentials; set credentials_file to a Kognic credentials file, or client_id and client_secret_file")
	}

	if kognic {
		var paths []pathAt
		var err error
		if hasFile {
			paths, err = p.onePath(file, field+".credentials_file")
		} else {
			paths, err = p.pathList(files, field+".credentials_files")
		}
		if err != nil {
			return err
		}
		p.addFiles(paths) // watched even if one fails to load, so that its fix is noticed
		for i, pa := range paths {
			cf, err := creds.LoadFile(pa.path, creds.WithClock(func() time.Time { return p.now }))
			if err != nil {
				return &tenantFileError{p.errf(pa.node, pa.field, "tenant %q: %w", t.Name, err)}
			}
			if err := p.secretFile(pa.node, pa.field, pa.path); err != nil {
				return &tenantFileError{err}
			}
			c := cf.Client()
			if i > 0 {
				t.Fallbacks = append(t.Fallbacks, Credential{ClientID: c.ID, ClientSecret: c.Secret, Source: c.Source})
				continue
			}
			if ownScopes {
				c.Scopes = nil
			} else if c.Scopes, err = names.NormalizeScopes(c.Scopes); err != nil {
				return &tenantFileError{p.errf(pa.node, pa.field, "tenant %q: %s: key \"scopes\": %w; fix the file or set scopes in the config", t.Name, pa.path, err)}
			}
			t.ClientID, t.ClientSecret, t.Scopes, t.CredentialsSource = c.ID, c.Secret, c.Scopes, c.Source
		}
		return nil
	}

	var err error
	if t.ClientID, err = p.str(id, field+".client_id"); err != nil {
		return err
	}
	var paths []pathAt
	key := "client_secret_file"
	if hasSecret {
		paths, err = p.onePath(secret, field+".client_secret_file")
	} else {
		key = "client_secret_files"
		paths, err = p.pathList(secrets, field+".client_secret_files")
	}
	if err != nil {
		return err
	}
	p.addFiles(paths)
	for i, pa := range paths {
		s, err := creds.LoadSecretFile(pa.path)
		if err != nil {
			return &tenantFileError{p.errf(pa.node, pa.field, "tenant %q: %w", t.Name, err)}
		}
		if err := p.secretFile(pa.node, pa.field, pa.path); err != nil {
			return &tenantFileError{err}
		}
		if i > 0 {
			t.Fallbacks = append(t.Fallbacks, Credential{ClientID: t.ClientID, ClientSecret: s, Source: key + " " + pa.path})
			continue
		}
		t.ClientSecret, t.CredentialsSource = s, key+" "+pa.path
	}
	return nil
}

// MaxRotationFiles bounds credentials_files and client_secret_files: each
// entry may cost one token request when the IdP rejects the others.
const MaxRotationFiles = 3

// pathAt is a resolved file path and where the config names it.
type pathAt struct {
	path, field string
	node        *yaml.Node
}

func (p *parser) onePath(e entry, field string) ([]pathAt, error) {
	s, err := p.str(e, field)
	if err != nil {
		return nil, err
	}
	return []pathAt{{p.resolvePath(s), field, e.val}}, nil
}

// pathList reads a list of 1 to MaxRotationFiles distinct file names.
func (p *parser) pathList(e entry, field string) ([]pathAt, error) {
	if e.val.Kind != yaml.SequenceNode || len(e.val.Content) == 0 || len(e.val.Content) > MaxRotationFiles {
		return nil, p.errf(e.val, field, "must be a list of 1 to %d files, newest first, got %s; write e.g. [new.secret, old.secret]", MaxRotationFiles, describeList(e.val))
	}
	var out []pathAt
	for i, n := range e.val.Content {
		n = resolve(n)
		f := fmt.Sprintf("%s[%d]", field, i)
		pa, err := p.onePath(entry{n, n}, f)
		if err != nil {
			return nil, err
		}
		for j, prev := range out {
			if prev.path == pa[0].path {
				return nil, p.errf(n, f, "%s is listed twice (also %s[%d]); list each file once", prev.path, field, j)
			}
		}
		out = append(out, pa[0])
	}
	return out, nil
}

func describeList(n *yaml.Node) string {
	if n.Kind == yaml.SequenceNode {
		return fmt.Sprintf("%d entries", len(n.Content))
	}
	return kindName(n)
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
