package daemon

import (
	"slices"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/limits"
)

// restartOnly are the settings a reload does not apply.
type restartOnly struct {
	listen string
	tls    config.TLS
	hasTLS bool
	audit  config.Audit
	limits limits.Limits
	watch  config.Watch
	admin  config.Admin
}

func restartOnlyOf(cfg *config.Config) restartOnly {
	r := restartOnly{listen: cfg.Listen, audit: cfg.Audit, limits: cfg.Limits, watch: cfg.Watch, admin: cfg.Admin}
	if cfg.TLS != nil {
		r.tls, r.hasTLS = *cfg.TLS, true
	}
	return r
}

// Reload applies cfg to the running daemon: the policy is built first,
// then the tenants are replaced, then the policy goes live, then the TLS
// files are re-read. When the policy has gone live, every open stream has
// been re-decided under it: one it revokes is cancelled and admits no
// further token (see guard.Config.Policy). Any error before the policy
// goes live keeps the running configuration and is returned; a TLS file
// that cannot be read keeps the current certificate and is only logged.
// Listen, tls, audit, limits, watch and admin changes take effect at
// restart only (a warning says so); shutdown applies to the next
// shutdown. The development tenant is kept. cfg is not modified. The
// files watched for changes become cfg.Files. Every call counts in
// tokenbroker_config_reloads_total.
//
// A tenant whose own files failed to load (config.Tenant.LoadErr, see
// config.Options.KeepTenantsOnFileError) keeps its running configuration,
// or is not added if it is new; an error log names it and the file. The
// other tenants' changes apply.
func (d *Daemon) Reload(cfg *config.Config) error {
	return d.reload(cfg, nil)
}

// reload is Reload; snap, if not nil, holds the files' digests taken
// before cfg was loaded (see watchState.applied).
func (d *Daemon) reload(cfg *config.Config, snap map[string]digest) (err error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	defer func() { d.metrics.reloaded(err) }()
	cfg, broken := d.keepRunning(cfg)
	full := withListen(cfg, "")
	full.Tenants = append(full.Tenants, d.dev...)
	pol, err := newPolicy(full)
	if err != nil {
		return err
	}
	tenants, fetchers, err := d.ups.tenants(full.Tenants)
	if err != nil {
		return err
	}
	if err := d.broker.SetTenants(tenants); err != nil {
		return err
	}
	d.ups.commit(fetchers)
	d.defaults.set(tenants)
	if err := d.holder.Store(pol); err != nil {
		return err
	}
	if d.tls != nil {
		if _, err := d.tls.Reload(); err != nil {
			d.log.Warn("TLS reload failed; keeping the current certificate", "error", err)
		}
	}
	if restartOnlyOf(cfg) != d.initial {
		d.log.Warn("listen, tls, audit, limits, watch and admin changes take effect only at restart")
	}
	d.mu.Lock()
	d.shutdown = cfg.Shutdown
	d.mu.Unlock()
	if pol.Empty() {
		d.log.Warn("NO CALLERS CONFIGURED: every loopback client may get every tenant's tokens without authentication, and other clients are refused")
	}
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
// by its running configuration, or left out if it is not running, and
// those tenants. cfg is not modified.
func (d *Daemon) keepRunning(cfg *config.Config) (*config.Config, []brokenTenant) {
	if !slices.ContainsFunc(cfg.Tenants, func(t config.Tenant) bool { return t.LoadErr != nil }) {
		return cfg, nil
	}
	running := map[string]config.Tenant{}
	d.watch.mu.Lock()
	if d.watch.cur != nil {
		for _, t := range d.watch.cur.Tenants {
			running[t.Name] = t
		}
	}
	d.watch.mu.Unlock()
	c := *cfg
	c.Tenants = make([]config.Tenant, 0, len(cfg.Tenants))
	var broken []brokenTenant
	for _, t := range cfg.Tenants {
		if t.LoadErr == nil {
			c.Tenants = append(c.Tenants, t)
			continue
		}
		old, ok := running[t.Name]
		broken = append(broken, brokenTenant{name: t.Name, err: t.LoadErr, kept: ok})
		if ok {
			c.Tenants = append(c.Tenants, old)
		}
	}
	return &c, broken
}
