package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

func (p *parser) callers(e entry, tls *TLS) ([]Caller, error) {
	if isNull(e.val) || e.val.Kind == yaml.SequenceNode && len(e.val.Content) == 0 {
		return nil, p.errf(e.val, "callers", "empty list; list at least one caller, or remove the key to serve only clients on this host, without authentication")
	}
	if e.val.Kind != yaml.SequenceNode {
		return nil, p.errf(e.val, "callers", "must be a list of callers, got %s", kindName(e.val))
	}
	p.lines["callers"] = e.key.Line
	firstLine := map[string]int{}
	var out []Caller
	for i, n := range e.val.Content {
		c, err := p.caller(resolve(n), fmt.Sprintf("callers[%d]", i), firstLine, tls)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (p *parser) caller(n *yaml.Node, field string, firstLine map[string]int, tls *TLS) (Caller, error) {
	m, err := p.mapping(n, field, callerKeys)
	if err != nil {
		return Caller{}, err
	}
	p.lines[field] = n.Line
	for k, e := range m {
		p.lines[field+"."+k] = e.key.Line
	}
	var c Caller
	e, ok := m["name"]
	if !ok {
		return Caller{}, p.errf(n, field, "missing required key \"name\"; add e.g. name: billing")
	}
	if c.Name, err = p.str(e, field+".name"); err != nil {
		return Caller{}, err
	}
	if line, dup := firstLine[c.Name]; dup {
		return Caller{}, p.errf(e.val, field+".name", "duplicate caller name %q (first on line %d); caller names must be unique", c.Name, line)
	}
	firstLine[c.Name] = e.val.Line

	var idKey string
	for _, k := range idKeys {
		ie, ok := m[k]
		if !ok {
			continue
		}
		if idKey != "" {
			return Caller{}, p.errf(ie.key, field, "caller %q has both %s and %s; set exactly one of %s", c.Name, idKey, k, strings.Join(idKeys, ", "))
		}
		idKey = k
	}
	if idKey == "" {
		return Caller{}, p.errf(n, field, "caller %q has no identity; set exactly one of %s", c.Name, strings.Join(idKeys, ", "))
	}
	ie := m[idKey]
	idField := field + "." + idKey
	v, err := p.str(ie, idField)
	if err != nil {
		return Caller{}, err
	}
	switch idKey {
	case "spiffe_id":
		c.SPIFFEID = v
	case "dns_name":
		c.DNSName = v
	case "common_name":
		c.CommonName = v
	case "api_key_sha256":
		// The value is never quoted: it might be the key itself.
		if len(v) != 64 {
			return Caller{}, p.errf(ie.val, idField, "must be the SHA-256 of the API key, 64 hex digits (printf %%s \"$KEY\" | sha256sum), got %d characters; never put the key itself in the config", len(v))
		}
		if strings.Trim(strings.ToLower(v), "0123456789abcdef") != "" {
			return Caller{}, p.errf(ie.val, idField, "must be the SHA-256 of the API key, 64 hex digits (0-9, a-f) only; never put the key itself in the config")
		}
		c.APIKeySHA256 = strings.ToLower(v)
	}
	if c.UsesCertificate() && (tls == nil || tls.ClientCAFile == "") {
		return Caller{}, p.errf(ie.key, idField, "caller %q is identified by a client certificate, but tls.client_ca_file is not set; add a tls section with cert_file, key_file and client_ca_file (the CAs that sign client certificates)", c.Name)
	}

	te, ok := m["tenants"]
	if !ok {
		return Caller{}, p.errf(n, field, "caller %q: missing required key \"tenants\"; add the tenant globs it may use, e.g. tenants: [acme, \"team-*\"]", c.Name)
	}
	if c.Tenants, err = p.globs(te, field+".tenants", `[acme, "team-*"]`); err != nil {
		return Caller{}, err
	}
	if len(c.Tenants) == 0 {
		return Caller{}, p.errf(te.val, field+".tenants", "empty list; give at least one tenant glob, e.g. [acme] or [\"team-*\"]")
	}
	if se, ok := m["scopes"]; ok && !isNull(se.val) {
		if c.Scopes, err = p.globs(se, field+".scopes", `["read:*"]`); err != nil {
			return Caller{}, err
		}
		if len(c.Scopes) == 0 {
			return Caller{}, p.errf(se.val, field+".scopes", "empty list; remove the key to allow every scope, or list the scope globs the caller may request, e.g. [\"read:*\"]")
		}
	}
	return c, nil
}

// globs returns a list of strings; the access policy checks their syntax.
func (p *parser) globs(e entry, field, example string) ([]string, error) {
	if e.val.Kind != yaml.SequenceNode {
		return nil, p.errf(e.val, field, "must be a list of globs, got %s; write e.g. %s", kindName(e.val), example)
	}
	var out []string
	for i, n := range e.val.Content {
		n = resolve(n)
		f := fmt.Sprintf("%s[%d]", field, i)
		p.lines[f] = n.Line
		if n.Kind != yaml.ScalarNode || isNull(n) {
			return nil, p.errf(n, f, "must be a string, got %s", kindName(n))
		}
		out = append(out, n.Value)
	}
	return out, nil
}
