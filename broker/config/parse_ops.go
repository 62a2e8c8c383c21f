package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

var (
	adminKeys = []string{"listen", "pprof", "hosts"}
	// hostNameRE is a DNS name as a Host header carries it, without port.
	hostNameRE   = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$`)
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
	if pe, ok := m["pprof"]; ok {
		if a.Pprof, err = p.boolean(pe, "admin.pprof"); err != nil {
			return Admin{}, err
		}
	}
	if he, ok := m["hosts"]; ok {
		if a.Hosts, err = p.adminHosts(he); err != nil {
			return Admin{}, err
		}
	}
	return a, nil
}

// adminHosts returns admin.hosts: host names, lower-cased, without port.
func (p *parser) adminHosts(e entry) ([]string, error) {
	const example = `[tokenbroker.monitoring.svc, tokenbroker.example.com]`
	if e.val.Kind != yaml.SequenceNode {
		return nil, p.errf(e.val, "admin.hosts", "must be a list of host names, got %s; write e.g. %s", kindName(e.val), example)
	}
	var out []string
	for i, n := range e.val.Content {
		n = resolve(n)
		f := fmt.Sprintf("admin.hosts[%d]", i)
		if n.Kind != yaml.ScalarNode || isNull(n) {
			return nil, p.errf(n, f, "must be a string, got %s", kindName(n))
		}
		if !hostNameRE.MatchString(n.Value) || strings.HasSuffix(n.Value, ".") || len(n.Value) > 253 {
			return nil, p.errf(n, f, "%q is not a host name; give the name clients put in the Host header, without scheme, port or wildcard, e.g. tokenbroker.monitoring.svc (IP literals and localhost are always accepted)", n.Value)
		}
		out = append(out, strings.ToLower(n.Value))
	}
	return out, nil
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
