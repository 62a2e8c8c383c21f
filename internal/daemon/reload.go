package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/internal/statuspage"
)

// restartOnly are the settings a reload does not apply, compared with
// reflect.DeepEqual.
func restartOnly(c *config.Config) []any {
	return []any{c.Listen, c.Socket, c.TLS, c.InsecurePlaintext, c.Audit, c.Limits, c.Watch, c.Admin, c.OAuth}
}

// ErrLowersSecurity is wrapped by the error of a reload refused because
// it would lower the running broker's security (see lowers); the running
// configuration is kept, and such a change needs a restart.
var ErrLowersSecurity = errors.New("the change would lower the broker's security")

// posture is the security of a configuration that no reload may lower.
type posture struct {
	callers     bool // callers configured: no open mode
	tls         bool
	clientCA    bool // client certificates verified (tls.client_ca_file)
	requireCert bool // tls.require_client_cert
	plaintext   bool // insecure_plaintext
	// socketMode and socketGroup say who may connect to the Unix socket
	// (unix_socket.mode and group).
	socketMode  fs.FileMode
	socketGroup string
	// scoped says of each caller whether it has a scopes allow-list: a
	// file cut short before one's scopes would grant it every scope.
	scoped map[string]bool
}

func postureOf(cfg *config.Config) posture {
	p := posture{callers: len(cfg.Callers) > 0, plaintext: cfg.InsecurePlaintext, scoped: map[string]bool{},
		socketMode: cfg.Socket.FileMode(), socketGroup: cfg.Socket.Group}
	for _, c := range cfg.Callers {
		p.scoped[c.Name] = len(c.Scopes) > 0
	}
	if t := cfg.TLS; t != nil {
		p.tls, p.clientCA, p.requireCert = true, t.ClientCAFile != "", t.RequireClientCert
	}
	return p
}

// lowers is the one rule of what a reload may not do: it returns an
// error wrapping ErrLowersSecurity that names each way next is weaker
// than running, or nil.
func lowers(running, next posture) error {
	var why []string
	if running.callers && !next.callers {
		why = append(why, "it removes every caller (open mode: every loopback client would get every tenant's tokens without authentication)")
	}
	switch {
	case running.tls && !next.tls:
		why = append(why, "it removes tls (a plaintext listener)")
	case running.clientCA && !next.clientCA:
		why = append(why, "it removes tls.client_ca_file (client certificates would no longer be verified)")
	case running.requireCert && !next.requireCert:
		why = append(why, "it turns tls.require_client_cert off")
	}
	if !running.plaintext && next.plaintext {
		why = append(why, "it sets insecure_plaintext")
	}
	if wider := next.socketMode &^ running.socketMode; wider != 0 {
		why = append(why, fmt.Sprintf("it widens unix_socket.mode from %04o to %04o (more users could connect)", running.socketMode, next.socketMode))
	}
	if next.socketGroup != running.socketGroup {
		why = append(why, fmt.Sprintf("it changes unix_socket.group from %q to %q (other users could connect)", running.socketGroup, next.socketGroup))
	}
	for _, name := range slices.Sorted(maps.Keys(next.scoped)) {
		if scoped, was := running.scoped[name]; was && scoped && !next.scoped[name] {
			why = append(why, fmt.Sprintf("it removes caller %q's scopes allow-list (it could request every scope)", name))
		}
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("daemon: reload refused: %w: %s; the running configuration is kept; restart the broker to apply such a change",
		ErrLowersSecurity, strings.Join(why, "; "))
}

// widened names, for the log, each caller of both configurations that
// next lets do more than running: every scope where it had an allow-list,
// or tenant and scope globs it did not have. Not refused (granting access
// is an operator's job), but never silent: a file cut short can widen.
func widened(running, next []config.Caller) []string {
	old := make(map[string]config.Caller, len(running))
	for _, c := range running {
		old[c.Name] = c
	}
	var out []string
	for _, c := range next {
		o, ok := old[c.Name]
		if !ok {
			continue
		}
		switch {
		case len(o.Scopes) > 0 && len(c.Scopes) == 0:
			out = append(out, fmt.Sprintf("caller %q may now request every scope (its scopes allow-list is gone)", c.Name))
		case len(o.Scopes) > 0 && !subset(c.Scopes, o.Scopes):
			out = append(out, fmt.Sprintf("caller %q may now request scopes %v (was %v)", c.Name, c.Scopes, o.Scopes))
		}
		if !subset(c.Tenants, o.Tenants) {
			out = append(out, fmt.Sprintf("caller %q may now use tenants %v (was %v)", c.Name, c.Tenants, o.Tenants))
		}
	}
	return out
}

// subset reports whether every glob of a is one of b.
func subset(a, b []string) bool {
	for _, g := range a {
		if !slices.Contains(b, g) {
			return false
		}
	}
	return true
}

// recordReload counts a reload attempt in tokenbroker_config_reloads_total
// and keeps its outcome for the status page: err nil is a success, one
// wrapping ErrLowersSecurity a refusal ("rejected"), any other an error.
func (d *Daemon) recordReload(err error) {
	r := statuspage.Reload{Result: "success", At: time.Now()}
	switch {
	case errors.Is(err, ErrLowersSecurity):
		r.Result, r.Error = "rejected", err.Error()
	case err != nil:
		r.Result, r.Error = "error", err.Error()
	}
	d.metrics.reloads.WithLabelValues(r.Result).Inc()
	d.mu.Lock()
	d.lastReload = r
	d.mu.Unlock()
}

// reloadStatus is the outcome of the last reload attempt, zero before the
// first (statuspage.WithReload).
func (d *Daemon) reloadStatus() statuspage.Reload {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastReload
}

// Reload applies cfg: it builds the policy, replaces the tenants, makes
// the policy live (every open stream is re-decided under it before Reload
// returns) and re-reads the TLS files. An error before the policy goes live
// keeps the running configuration. A cfg that would lower the security
// (lowers) is refused with an error wrapping ErrLowersSecurity; restartOnly
// settings wait for a restart (a warning says so). A tenant with a LoadErr
// keeps its running configuration, or is not added; the reload then counts
// as an error. cfg is not modified; the development tenants are kept.
func (d *Daemon) Reload(cfg *config.Config) error {
	return d.reload(cfg, nil)
}

// reload is Reload; snap, if not nil, holds the files' digests taken
// before cfg was loaded (see watchState.applied).
func (d *Daemon) reload(cfg *config.Config, snap map[string]digest) (err error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	cfg, broken := d.keepRunning(cfg)
	defer func() {
		outcome := err
		for _, b := range broken {
			outcome = errors.Join(outcome, fmt.Errorf("tenant %s: %w", b.name, b.err))
		}
		d.recordReload(outcome)
	}()
	if err := lowers(d.posture, postureOf(cfg)); err != nil {
		d.log.Error("config reload refused; keeping the running configuration", "error", err)
		return err
	}
	full, err := withListen(cfg, nil)
	if err != nil {
		return err
	}
	full.Tenants = append(full.Tenants, d.dev...)
	if err := needSocket(full, d.sock != nil); err != nil {
		return err
	}
	pol, err := newPolicy(full)
	if err != nil {
		return err
	}
	for _, w := range widened(d.watch.current().Callers, cfg.Callers) {
		d.log.Warn("config reload widens access: "+w, "caller_access", "widened")
	}
	tenants, fetchers, err := d.ups.tenants(full.Tenants)
	if err != nil {
		return err
	}
	if err := d.broker.SetTenants(tenants); err != nil {
		return err
	}
	d.ups.commit(fetchers)
	if err := d.holder.Store(pol); err != nil {
		return err
	}
	// Open mode is entered only at start (the guard warns then): lowers
	// refuses a reload that removes every caller.
	d.posture.callers = !pol.Empty()
	d.posture.scoped = postureOf(cfg).scoped
	if d.tls != nil {
		if _, err := d.tls.Reload(); err != nil {
			d.log.Warn("TLS reload failed; keeping the current certificate", "error", err)
		}
	}
	if !reflect.DeepEqual(restartOnly(cfg), d.initial) {
		d.log.Warn("listen, unix_socket, tls, insecure_plaintext, audit, limits, watch, admin and oauth changes take effect only at restart")
	}
	d.mu.Lock()
	d.shutdown = cfg.Shutdown
	d.mu.Unlock()
	d.watch.applied(cfg, snap)
	for _, b := range broken {
		if b.kept {
			d.log.Error("tenant's files could not be loaded; the tenant keeps its running configuration, the other tenants' changes apply",
				"tenant", b.name, "error", b.err)
		} else {
			d.log.Error("tenant not added: its files could not be loaded", "tenant", b.name, "error", b.err)
		}
	}
	d.log.Info("config reloaded", "tenants", len(full.Tenants), "callers", len(full.Callers))
	return nil
}

// brokenTenant is a tenant of a reloaded configuration whose own files
// failed to load.
type brokenTenant struct {
	name string
	err  error
	kept bool // it runs on with its running configuration; else it is left out
}

// keepRunning returns cfg with every tenant that has a LoadErr replaced
// by its running configuration (found by its tenants_dir file, else by
// name), or left out if it is not running, and those tenants. cfg is not
// modified.
func (d *Daemon) keepRunning(cfg *config.Config) (*config.Config, []brokenTenant) {
	if !slices.ContainsFunc(cfg.Tenants, func(t config.Tenant) bool { return t.LoadErr != nil }) {
		return cfg, nil
	}
	running := map[string]config.Tenant{}
	for _, t := range d.watch.current().Tenants {
		running[t.Name] = t
		if t.File != "" {
			running[t.File] = t // a broken file's name is only a guess
		}
	}
	c := *cfg
	c.Tenants = make([]config.Tenant, 0, len(cfg.Tenants))
	var broken []brokenTenant
	for _, t := range cfg.Tenants {
		if t.LoadErr == nil {
			c.Tenants = append(c.Tenants, t)
			continue
		}
		old, ok := running[t.File]
		if !ok {
			old, ok = running[t.Name]
		}
		if ok {
			c.Tenants, t.Name = append(c.Tenants, old), old.Name
		}
		broken = append(broken, brokenTenant{name: t.Name, err: t.LoadErr, kept: ok})
	}
	return &c, broken
}
