package config

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/kognic"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// MaxRotationFiles bounds credentials_files and client_secret_files: each
// entry may cost one token request when the IdP rejects the others.
const MaxRotationFiles = 3

// tenantExts are the extensions of the files read from tenants_dir.
var tenantExts = []string{".yaml", ".yml", ".json"}

// TenantFiles lists the tenant files of a tenants_dir, sorted: the entries
// whose name ends in .yaml, .yml or .json and does not start with a dot (a
// Kubernetes volume's "..data" and its timestamped directories). Symlinks
// are listed as they are; reading follows them.
func TenantFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, ".") && !e.IsDir() && slices.Contains(tenantExts, filepath.Ext(name)) {
			out = append(out, filepath.Join(dir, name))
		}
	}
	return out, nil
}

// tenantFileError marks a failure to load one of a tenant's own files,
// which Options.KeepTenantsOnFileError confines to that tenant.
type tenantFileError struct{ err error }

func (e *tenantFileError) Error() string { return e.err.Error() }
func (e *tenantFileError) Unwrap() error { return e.err }

// tenants validates the tenants list and reads tenants_dir.
func (p *parser) tenants(d *fileDoc, cfg *Config) ([]Tenant, error) {
	out := make([]Tenant, 0, len(d.Tenants))
	for i, td := range d.Tenants {
		t, err := p.entry(td, fmt.Sprintf("tenants[%d]", i))
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	fix := "add an entry with a name and a credentials_file"
	if d.TenantsDir != "" {
		dir := p.resolve(d.TenantsDir)
		cfg.TenantsDir = dir
		p.addFile(dir) // watched: a file added or removed changes its listing
		files, err := TenantFiles(dir)
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			return nil, p.errf("tenants_dir", "cannot read %s: %w; create it, or fix the path (relative to the config file's directory)", dir, pe.Err)
		} else if err != nil {
			return nil, p.errf("tenants_dir", "%w", err)
		}
		tenants, err := p.tenantFiles(files)
		if err != nil {
			return nil, err
		}
		out = append(out, tenants...)
		fix += fmt.Sprintf(", or a tenant file to tenants_dir %s (one of %s)", dir, strings.Join(tenantExts, ", "))
	}
	if len(out) == 0 {
		return nil, p.errf("tenants", "at least one tenant is required; %s", fix)
	}
	return out, nil
}

// entry validates an entry of tenants. With KeepTenantsOnFileError, a
// failure of its own files is kept in its LoadErr.
func (p *parser) entry(d *tenantDoc, field string) (Tenant, error) {
	if d == nil {
		return Tenant{}, p.nothing(field, reflect.TypeFor[tenantDoc]())
	}
	if d.Name == "" {
		return Tenant{}, p.required(field, "name", "add e.g. name: acme")
	}
	if err := p.unique(d.Name, p, join(field, "name")); err != nil {
		return Tenant{}, err
	}
	t, err := p.tenant(d, field)
	if fe, ok := errors.AsType[*tenantFileError](err); ok {
		if !p.keep {
			return Tenant{}, fe.err
		}
		return Tenant{Name: d.Name, LoadErr: fe.err}, nil
	}
	return t, err
}

// tenantFiles reads the tenant files, GOMAXPROCS at a time, and adds them
// in file order. With KeepTenantsOnFileError any failure but a duplicate
// name is kept in the tenant's LoadErr (Name is then a best guess; File is
// set).
func (p *parser) tenantFiles(files []string) ([]Tenant, error) {
	loaded := make([]fileTenant, len(files))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(files)) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(files); i = int(next.Add(1)) - 1 {
				loaded[i] = p.tenantFile(files[i])
			}
		})
	}
	wg.Wait()
	out := make([]Tenant, 0, len(files))
	for i, r := range loaded {
		p.addFile(files[i])
		for _, f := range r.fp.files {
			p.addFile(f)
		}
		if r.named {
			if err := p.unique(r.name, r.fp, "name"); err != nil {
				return nil, err // refused, not confined: two tenants claim the name
			}
		}
		err := r.err
		if fe, ok := errors.AsType[*tenantFileError](err); ok {
			err = fe.err
		}
		switch {
		case err == nil:
			out = append(out, r.t)
		case !p.keep:
			return nil, err
		default:
			out = append(out, Tenant{Name: r.name, File: files[i], LoadErr: err})
		}
	}
	return out, nil
}

// fileTenant is a tenant file as tenantFile loaded it.
type fileTenant struct {
	fp    *parser
	name  string // the tenant's name; a guess unless named
	named bool   // the file decoded and names a valid tenant
	t     Tenant
	err   error
}

// tenantFile loads a tenant file on a load of its own, which tenantFiles
// merges.
func (p *parser) tenantFile(path string) fileTenant {
	l := &load{now: p.now, log: p.log, keep: p.keep, strict: p.strict, seen: map[string]bool{}}
	fp, d, err := readTenant(path, l)
	r := fileTenant{fp: fp, name: d.Name, named: err == nil, err: err}
	if err == nil {
		r.t, r.err = fp.tenant(d, "")
		r.t.File = path
	}
	return r
}

// readTenant reads and decodes a tenant file. The tenant's name is its
// name key, else the file name without extension.
func readTenant(path string, l *load) (*parser, *tenantDoc, error) {
	fp := &parser{name: path, baseDir: filepath.Dir(path), load: l}
	d := &tenantDoc{}
	data, err := creds.ReadFile(path, MaxFileSize) // regular files only
	if err != nil {
		err = &Error{File: path, Err: fmt.Errorf("cannot read tenant file: %w", err)}
	} else {
		fp.data = data
		err = fp.decode(d, "write the tenant's keys, as in an entry of tenants")
	}
	if err == nil && reflect.ValueOf(*d).IsZero() {
		err = fp.empty("write the tenant's keys, as in an entry of tenants")
	}
	named := d.Name != ""
	d.Name = cmp.Or(d.Name, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	if err != nil {
		return fp, d, err
	}
	if err := names.ValidTenant(d.Name); err != nil && named {
		return fp, d, fp.errf("name", "%w", err)
	} else if err != nil {
		return fp, d, &Error{File: path, Err: fmt.Errorf("%w; it is the file name without extension: rename the file or set name", err)}
	}
	return fp, d, nil
}

// unique records where the tenant name is set (field of file at), or
// refuses a duplicate naming both places.
func (p *parser) unique(name string, at *parser, field string) error {
	first, dup := p.names[name]
	if !dup {
		p.names[name] = nameAt{at, field}
		return nil
	}
	line := first.p.line(first.field)
	where := fmt.Sprintf("on line %d", line)
	if first.p.name != at.name {
		where = "in " + first.p.name
		if line > 0 {
			where += ":" + strconv.Itoa(line)
		}
	}
	return at.errf(field, "duplicate tenant name %q (first %s); tenant names must be unique", name, where)
}

// tenant validates d, whose name is checked, at field ("" in a tenant
// file) and reads its files.
func (p *parser) tenant(d *tenantDoc, field string) (Tenant, error) {
	if err := names.ValidTenant(d.Name); err != nil {
		return Tenant{}, p.errf(join(field, "name"), "%w", err)
	}
	t := Tenant{Name: d.Name, AuthStyle: AuthStyle(cmp.Or(d.AuthStyle, string(AuthStyleBody))), AllowInsecureHTTP: d.AllowInsecureHTTP}
	var err error
	if t.TokenURL, err = p.tokenURL(d, field); err != nil {
		return Tenant{}, err
	}
	if d.CAFile != "" {
		t.CAFile = p.resolve(d.CAFile)
		if t.RootCAs, err = p.caFile(join(field, "ca_file"), t.CAFile, t.Name); err != nil {
			return t, err
		}
	}
	if t.AuthStyle != AuthStyleBody && t.AuthStyle != AuthStyleBasic {
		return Tenant{}, p.errf(join(field, "auth_style"), "%q is not allowed; use %q (client_secret_post, the default) or %q (client_secret_basic)", d.AuthStyle, AuthStyleBody, AuthStyleBasic)
	}
	scopes, err := p.scopes(d.Scopes, join(field, "scopes"))
	if err != nil {
		return Tenant{}, err
	}
	if err := p.credentials(d, field, &t, len(scopes) > 0); err != nil {
		return t, err
	}
	if len(scopes) > 0 {
		t.Scopes = scopes
	}
	return t, nil
}

func (p *parser) tokenURL(d *tenantDoc, field string) (string, error) {
	rules := upstream.URLRules{AllowInsecureHTTP: d.AllowInsecureHTTP}
	switch {
	case d.AuthServer != "" && d.TokenURL != "":
		return "", p.keyErr(field, "token_url", "auth_server and token_url are mutually exclusive; set auth_server (%s is appended) or the full token_url, not both", kognic.TokenPath)
	case d.TokenURL != "":
		return d.TokenURL, p.checkURL(join(field, "token_url"), d.TokenURL, rules, "use the full token endpoint, e.g. https://idp.example.com/oauth2/token")
	case d.AuthServer != "":
		rules.Base = true
		return kognic.TokenURL(d.AuthServer), p.checkURL(join(field, "auth_server"), d.AuthServer, rules, "use e.g. "+kognic.DefaultAuthServer)
	}
	// An empty value must not send the secret to the default server.
	for _, k := range []string{"token_url", "auth_server"} {
		if p.has(join(field, k)) {
			return "", p.errf(join(field, k), "must not be empty; remove the key for %s", kognic.DefaultAuthServer)
		}
	}
	return kognic.TokenURL(kognic.DefaultAuthServer), nil
}

func (p *parser) checkURL(field, s string, rules upstream.URLRules, fix string) error {
	err := upstream.CheckURL(s, rules)
	switch {
	case errors.Is(err, upstream.ErrInsecureURL):
		return p.errf(field, "%w", err)
	case err != nil:
		return p.errf(field, "%v; %s", err, fix)
	}
	return nil
}

// scopes validates a scopes list, naming the field of a bad element.
func (p *parser) scopes(list []string, field string) ([]string, error) {
	for i, s := range list {
		if err := names.ValidScope(s); err != nil {
			return nil, p.errf(fmt.Sprintf("%s[%d]", field, i), "%w", err)
		}
	}
	scopes, err := names.NormalizeScopes(list)
	if err != nil {
		return nil, p.errf(field, "%w", err)
	}
	return scopes, nil
}

// caFile reads the tenant's ca_file into the root CAs it will use.
func (p *parser) caFile(field, path, tenant string) (*x509.CertPool, error) {
	if err := p.readable(field, path); err != nil {
		return nil, &tenantFileError{err}
	}
	pool, err := upstream.RootCAs(path)
	if err != nil {
		return nil, &tenantFileError{p.errf(field, "tenant %q: %s holds no PEM certificate; give the private CA's certificate in PEM (-----BEGIN CERTIFICATE-----)", tenant, path)}
	}
	return pool, nil
}

// credentials reads the tenant's credential files into t. During a
// rotation the plural keys list them newest first: the first is the
// tenant's credential, the others its Fallbacks. A credentials file's
// scopes are checked only when used, that is unless the tenant sets its
// own.
func (p *parser) credentials(d *tenantDoc, field string, t *Tenant, ownScopes bool) error {
	if err := p.credentialKeys(d, field); err != nil {
		return err
	}
	key, one, list := "client_secret_file", d.ClientSecretFile, d.ClientSecretFiles
	kognic := d.CredentialsFile != "" || d.CredentialsFiles != nil
	if kognic {
		key, one, list = "credentials_file", d.CredentialsFile, d.CredentialsFiles
	}
	paths, err := p.rotation(field, key, one, list)
	if err != nil {
		return err
	}
	for _, pa := range paths {
		p.addFile(pa.path) // watched even if one fails to load, so that its fix is noticed
	}
	for i, pa := range paths {
		c, err := p.credential(pa, kognic, d.ClientID)
		if err != nil {
			return &tenantFileError{p.errf(pa.field, "tenant %q: %w", t.Name, err)}
		}
		if err := p.secretFile(pa.field, pa.path); err != nil {
			return &tenantFileError{err}
		}
		if i > 0 {
			t.Fallbacks = append(t.Fallbacks, Credential{ClientID: c.ID, ClientSecret: c.Secret, Source: c.Source})
			continue
		}
		if kognic && !ownScopes {
			if t.Scopes, err = names.NormalizeScopes(c.Scopes); err != nil {
				return &tenantFileError{p.errf(pa.field, "tenant %q: %s: key \"scopes\": %w; fix the file or set scopes in the config", t.Name, pa.path, err)}
			}
		}
		t.ClientID, t.ClientSecret, t.CredentialsSource = c.ID, c.Secret, c.Source
	}
	return nil
}

// credential reads one Kognic credentials file, or a secret file of client
// id.
func (p *parser) credential(pa pathAt, kognic bool, id string) (creds.Client, error) {
	if kognic {
		f, err := creds.LoadFile(pa.path, creds.WithClock(func() time.Time { return p.now }))
		if err != nil {
			return creds.Client{}, err
		}
		return f.Client(), nil
	}
	s, err := creds.LoadSecretFile(pa.path)
	return creds.Client{ID: id, Secret: s, Source: pa.key + " " + pa.path}, err
}

// credentialKeys checks that the tenant names exactly one kind of
// credentials, completely.
func (p *parser) credentialKeys(d *tenantDoc, field string) error {
	set := map[string]bool{
		"credentials_file": d.CredentialsFile != "", "credentials_files": d.CredentialsFiles != nil,
		"client_id": d.ClientID != "", "client_secret_file": d.ClientSecretFile != "", "client_secret_files": d.ClientSecretFiles != nil,
	}
	first := func(keys ...string) string {
		for _, k := range keys {
			if set[k] {
				return k
			}
		}
		return ""
	}
	kognic, generic, secret := first("credentials_file", "credentials_files"), first("client_id", "client_secret_file", "client_secret_files"), first("client_secret_file", "client_secret_files")
	switch {
	case set["credentials_file"] && set["credentials_files"]:
		return p.keyErr(field, "credentials_files", "credentials_file and credentials_files are mutually exclusive; during a rotation list both files under credentials_files, newest first")
	case set["client_secret_file"] && set["client_secret_files"]:
		return p.keyErr(field, "client_secret_files", "client_secret_file and client_secret_files are mutually exclusive; during a rotation list both files under client_secret_files, newest first")
	case kognic != "" && generic != "":
		return p.keyErr(field, generic, "%s and %s are mutually exclusive; use either a Kognic credentials_file, or client_id with client_secret_file", kognic, generic)
	case set["client_id"] && secret == "":
		return p.keyErr(field, "client_id", "client_id is set but client_secret_file is missing; add client_secret_file naming a file that holds the client secret")
	case secret != "" && !set["client_id"]:
		return p.keyErr(field, secret, "%s is set but client_id is missing; add client_id", secret)
	case kognic == "" && generic == "":
		return p.errf(field, "no credentials; set credentials_file to a Kognic credentials file, or client_id and client_secret_file")
	}
	return nil
}

// pathAt is a resolved file path and where the config names it.
type pathAt struct{ path, key, field string }

// rotation returns the file of key, or the 1 to MaxRotationFiles distinct
// files of its plural (list).
func (p *parser) rotation(field, key, one string, list []string) ([]pathAt, error) {
	if one != "" {
		return []pathAt{{p.resolve(one), key, join(field, key)}}, nil
	}
	key += "s"
	field = join(field, key)
	if len(list) == 0 || len(list) > MaxRotationFiles {
		return nil, p.errf(field, "must be a list of 1 to %d files, newest first, got %d entries; write e.g. [new.secret, old.secret]", MaxRotationFiles, len(list))
	}
	out := make([]pathAt, 0, len(list))
	for i, s := range list {
		pa := pathAt{p.resolve(s), key, fmt.Sprintf("%s[%d]", field, i)}
		if s == "" {
			return nil, p.errf(pa.field, "must not be empty")
		}
		if j := slices.IndexFunc(out, func(o pathAt) bool { return o.path == pa.path }); j >= 0 {
			return nil, p.errf(pa.field, "%s is listed twice (also %s[%d]); list each file once", pa.path, field, j)
		}
		out = append(out, pa)
	}
	return out, nil
}
