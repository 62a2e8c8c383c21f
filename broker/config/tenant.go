package config

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/kognic"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// MaxRotationFiles bounds credentials_files and client_secret_files: each
// entry may cost one token request when the IdP rejects the others.
const MaxRotationFiles = 3

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
	if t.AuthStyle != AuthStyleBody && t.AuthStyle != AuthStyleBasic && t.AuthStyle != AuthStylePrivateKeyJWT {
		return Tenant{}, p.errf(join(field, "auth_style"), "%q is not allowed; use %q (client_secret_post, the default), %q (client_secret_basic) or %q (a signed assertion, no secret)", d.AuthStyle, AuthStyleBody, AuthStyleBasic, AuthStylePrivateKeyJWT)
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
	kind, one, list := "client_secret_file", d.ClientSecretFile, d.ClientSecretFiles
	switch {
	case d.CredentialsFile != "" || d.CredentialsFiles != nil:
		kind, one, list = "credentials_file", d.CredentialsFile, d.CredentialsFiles
	case d.ClientAssertionKeyFile != "" || d.ClientAssertionKeyFiles != nil:
		kind, one, list = "client_assertion_key_file", d.ClientAssertionKeyFile, d.ClientAssertionKeyFiles
		t.KeyID, t.AssertionAudience = d.KeyID, d.AssertionAudience
	}
	paths, err := p.rotation(field, kind, one, list)
	if err != nil {
		return err
	}
	for _, pa := range paths {
		p.addFile(pa.path) // watched even if one fails to load, so that its fix is noticed
	}
	for i, pa := range paths {
		c, err := p.credential(pa, kind, d.ClientID)
		if err != nil {
			return &tenantFileError{p.errf(pa.field, "tenant %q: %w", t.Name, err)}
		}
		if err := p.secretFile(pa.field, pa.path); err != nil {
			return &tenantFileError{err}
		}
		if i > 0 {
			t.Fallbacks = append(t.Fallbacks, c.Credential)
			continue
		}
		if kind == "credentials_file" && !ownScopes {
			if t.Scopes, err = names.NormalizeScopes(c.scopes); err != nil {
				return &tenantFileError{p.errf(pa.field, "tenant %q: %s: key \"scopes\": %w; fix the file or set scopes in the config", t.Name, pa.path, err)}
			}
		}
		t.ClientID, t.ClientSecret, t.ClientKey, t.CredentialsSource = c.ClientID, c.ClientSecret, c.Key, c.Name
	}
	return nil
}

// loaded is a credential read from one file, with a Kognic file's scopes.
type loaded struct {
	upstream.Credential
	scopes []string
}

// credential reads one file of kind: a Kognic credentials file, a secret
// file or a private key file of client id.
func (p *parser) credential(pa pathAt, kind, id string) (loaded, error) {
	source := pa.key + " " + pa.path
	switch kind {
	case "credentials_file":
		f, err := creds.LoadFile(pa.path, creds.WithClock(func() time.Time { return p.now }))
		if err != nil {
			return loaded{}, err
		}
		c := f.Client()
		return loaded{upstream.Credential{ClientID: c.ID, ClientSecret: c.Secret, Name: c.Source}, c.Scopes}, nil
	case "client_assertion_key_file":
		k, err := creds.LoadPrivateKeyFile(pa.path)
		return loaded{Credential: upstream.Credential{ClientID: id, Key: k, Name: source}}, err
	}
	s, err := creds.LoadSecretFile(pa.path)
	return loaded{Credential: upstream.Credential{ClientID: id, ClientSecret: s, Name: source}}, err
}

// credentialKeys checks that the tenant names exactly one kind of
// credentials, completely.
func (p *parser) credentialKeys(d *tenantDoc, field string) error {
	kognic := either("credentials_file", d.CredentialsFile != "", d.CredentialsFiles)
	secret := either("client_secret_file", d.ClientSecretFile != "", d.ClientSecretFiles)
	if d.AuthStyle == string(AuthStylePrivateKeyJWT) {
		return p.assertionKeys(d, field, cmp.Or(secret, kognic))
	}
	if err := p.withoutAssertion(d, field); err != nil {
		return err
	}
	generic := secret // the first key of client_id and a client secret
	if d.ClientID != "" {
		generic = "client_id"
	}
	switch {
	case d.CredentialsFile != "" && d.CredentialsFiles != nil:
		return p.bothForms(field, "credentials_file", "files")
	case d.ClientSecretFile != "" && d.ClientSecretFiles != nil:
		return p.bothForms(field, "client_secret_file", "files")
	case kognic != "" && generic != "":
		return p.keyErr(field, generic, "%s and %s are mutually exclusive; use either a Kognic credentials_file, or client_id with client_secret_file", kognic, generic)
	case d.ClientID != "" && secret == "":
		return p.keyErr(field, "client_id", "client_id is set but client_secret_file is missing; add client_secret_file naming a file that holds the client secret (or client_assertion_key_file with auth_style: private_key_jwt)")
	case secret != "" && d.ClientID == "":
		return p.keyErr(field, secret, "%s is set but client_id is missing; add client_id", secret)
	case generic == "" && kognic == "":
		return p.errf(field, "no credentials; set credentials_file to a Kognic credentials file, client_id and client_secret_file, or client_id, client_assertion_key_file and auth_style: private_key_jwt")
	}
	return nil
}

// either names key if one is set, else its plural if list is, else "".
func either(key string, one bool, list []string) string {
	switch {
	case one:
		return key
	case list != nil:
		return key + "s"
	}
	return ""
}

// bothForms is the error for a key set both singular and plural.
func (p *parser) bothForms(field, key, what string) error {
	return p.keyErr(field, key+"s", "%s and %ss are mutually exclusive; during a rotation list both %s under %ss, newest first", key, key, what, key)
}

// assertionKeys checks a private_key_jwt tenant: client_id and
// client_assertion_key_file(s), no secret (the key holding one is secret).
func (p *parser) assertionKeys(d *tenantDoc, field, secret string) error {
	keyKey := assertionKey(d)
	switch {
	case d.ClientAssertionKeyFile != "" && d.ClientAssertionKeyFiles != nil:
		return p.bothForms(field, "client_assertion_key_file", "keys")
	case secret != "":
		return p.keyErr(field, secret, "auth_style private_key_jwt sends no secret; remove %s (the identity provider knows the client by client_id and its registered public key)", secret)
	case d.ClientAssertionKeyFile == "" && d.ClientAssertionKeyFiles == nil:
		return p.keyErr(field, "auth_style", "auth_style private_key_jwt needs client_assertion_key_file, the PEM private key the assertions are signed with; add it, and register its public key with the identity provider (broker keys prints it)")
	case d.ClientID == "":
		return p.keyErr(field, keyKey, "%s is set but client_id is missing; add client_id (the assertions' iss and sub)", keyKey)
	case d.KeyID != "" && d.ClientAssertionKeyFiles != nil:
		return p.keyErr(field, "key_id", "key_id names one key, but client_assertion_key_files lists several; remove key_id: each key's kid is then its RFC 7638 thumbprint, as broker keys prints it for registration")
	}
	for _, k := range []struct{ key, value, fix string }{
		{"key_id", d.KeyID, "remove the key for the key's RFC 7638 thumbprint"},
		{"assertion_audience", d.AssertionAudience, "remove the key for the token URL"},
	} {
		if k.value == "" && p.has(join(field, k.key)) {
			return p.errf(join(field, k.key), "must not be empty; %s", k.fix)
		}
		if len(k.value) > 1024 || strings.ContainsFunc(k.value, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return p.errf(join(field, k.key), "must be at most 1024 characters without spaces or control characters")
		}
	}
	return nil
}

// assertionKey is the key naming the tenant's assertion key file(s).
func assertionKey(d *tenantDoc) string {
	if d.ClientAssertionKeyFiles != nil {
		return "client_assertion_key_files"
	}
	return "client_assertion_key_file"
}

// withoutAssertion refuses private_key_jwt's keys without its auth_style.
func (p *parser) withoutAssertion(d *tenantDoc, field string) error {
	const fix = "remove it, or set auth_style: private_key_jwt with client_assertion_key_file"
	switch keyKey := assertionKey(d); {
	case d.ClientAssertionKeyFile != "" || d.ClientAssertionKeyFiles != nil:
		return p.keyErr(field, keyKey, "%s needs auth_style: private_key_jwt; add it (the signed assertion replaces the client secret)", keyKey)
	case d.KeyID != "" || p.has(join(field, "key_id")):
		return p.keyErr(field, "key_id", "key_id is the kid of private_key_jwt assertions; %s", fix)
	case d.AssertionAudience != "" || p.has(join(field, "assertion_audience")):
		return p.keyErr(field, "assertion_audience", "assertion_audience is the aud of private_key_jwt assertions; %s", fix)
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
		eg := map[string]string{"credentials_files": "[new.json, old.json]", "client_assertion_key_files": "[new.pem, old.pem]"}[key]
		return nil, p.errf(field, "must be a list of 1 to %d files, newest first, got %d entries; write e.g. %s", MaxRotationFiles, len(list), cmp.Or(eg, "[new.secret, old.secret]"))
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
