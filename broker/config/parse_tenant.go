package config

import (
	"errors"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/kognic"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

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
