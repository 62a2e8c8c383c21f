package clientlib

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/kognic"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// Environment variables read by NewHTTPClient besides the KOGNIC_* ones.
const (
	EnvBrokerAddr   = "TOKENBROKER_ADDR"   // set: tokens come from the broker
	EnvBrokerTenant = "TOKENBROKER_TENANT" // default "default"
)

// DefaultTenant is the tenant asked for when none is named.
const DefaultTenant = names.DefaultTenant

type mode int

const (
	modeBroker mode = iota + 1
	modeDirect
	modeByHost // one direct-mode plan per environment, chosen per request
)

// plan is where tokens come from, resolved from options and environment
// before anything is dialled or started.
type plan struct {
	mode mode
	from string // the option or environment variables that chose it
	// broker mode
	addr, tenant string
	// direct mode
	direct     broker.Tenant
	serverFrom string // what set the auth server, for errors
	// by-host mode
	envs *creds.Environments
}

func (p *plan) describe() string {
	switch p.mode {
	case modeBroker:
		return fmt.Sprintf("broker %s, tenant %q (from %s)", p.addr, p.tenant, p.from)
	case modeByHost:
		return fmt.Sprintf("direct, environment by request host (from %s)", p.from)
	}
	return fmt.Sprintf("direct to %s as client %s (from %s)", p.direct.TokenURL, p.direct.ClientID, p.from)
}

// resolve decides where tokens come from. It reads the environment only
// through cfg.lookup and the time through cfg.now.
func resolve(cfg *clientConfig) (*plan, error) {
	var ch choice
	switch len(cfg.choices) {
	case 0:
		switch addr, tenant := cfg.env(EnvBrokerAddr), cfg.env(EnvBrokerTenant); {
		case addr != "":
			ch = choice{option: EnvBrokerAddr, addr: addr, tenant: tenant}
		case tenant != "":
			return nil, fmt.Errorf("clientlib: %s is set but %s is not; set %s to the broker's address, or unset %s",
				EnvBrokerTenant, EnvBrokerAddr, EnvBrokerAddr, EnvBrokerTenant)
		}
	case 1:
		ch = cfg.choices[0]
	default:
		var ok bool
		if ch, ok = envWithFile(cfg.choices); !ok {
			return nil, fmt.Errorf("clientlib: %s and %s both say where tokens come from; pass only one of WithBroker, WithCredentialsFile, WithClientCredentials, WithEnvironment and WithEnvironmentByHost (WithEnvironment combines with WithCredentialsFile)",
				cfg.choices[0].option, cfg.choices[1].option)
		}
	}

	switch ch.option {
	case "WithBroker", EnvBrokerAddr:
		return resolveBroker(cfg, ch)
	case "WithEnvironment":
		envs, err := loadEnvironments(cfg)
		if err != nil {
			return nil, err
		}
		env, err := envs.Lookup(ch.env)
		if err != nil {
			return nil, fmt.Errorf("clientlib: WithEnvironment: %w", err)
		}
		if ch.file != "" && env.Credentials != "" {
			return nil, fmt.Errorf("clientlib: WithCredentialsFile (%s) and environment %q of %s (credentials %s) both name credentials; drop one of them (--credentials or --env in broker token and broker call), or remove the environment's credentials key",
				ch.file, env.Name, envs.Path, env.Credentials)
		}
		return resolveDirect(cfg, ch, &env)
	case "WithEnvironmentByHost":
		if cfg.authServer != "" {
			return nil, errors.New("clientlib: WithAuthServer does not combine with WithEnvironmentByHost, where each environment names its auth_server")
		}
		envs, err := loadEnvironments(cfg)
		if err != nil {
			return nil, err
		}
		return &plan{mode: modeByHost, from: ch.option + " and " + envs.Path, envs: envs}, nil
	}
	return resolveDirect(cfg, ch, nil)
}

// envWithFile merges the one pair of choices that combines, as
// kognic-auth's --env with --credentials.
func envWithFile(choices []choice) (choice, bool) {
	if len(choices) != 2 {
		return choice{}, false
	}
	e, f := choices[0], choices[1]
	if e.option != "WithEnvironment" {
		e, f = f, e
	}
	if e.option != "WithEnvironment" || f.option != "WithCredentialsFile" {
		return choice{}, false
	}
	e.file = f.file
	return e, true
}

func resolveBroker(cfg *clientConfig, ch choice) (*plan, error) {
	p := &plan{mode: modeBroker, from: ch.option, addr: strings.TrimSpace(ch.addr), tenant: cmp.Or(ch.tenant, DefaultTenant)}
	if ch.option == EnvBrokerAddr && ch.tenant != "" {
		p.from += " and " + EnvBrokerTenant
	}
	if p.addr == "" {
		return nil, errors.New("clientlib: WithBroker: the broker address is empty; pass host:port")
	}
	if err := names.ValidTenant(p.tenant); err != nil {
		return nil, withKind(ErrInvalidArgument, fmt.Errorf("clientlib: %s: %w", p.from, err))
	}
	if cfg.authServer != "" {
		return nil, fmt.Errorf("clientlib: WithAuthServer applies to direct mode only, but %s selects broker mode, where the broker holds the tenant's token URL", ch.option)
	}
	if _, err := names.NormalizeScopes(cfg.source.scopes); err != nil {
		return nil, withKind(ErrInvalidArgument, fmt.Errorf("clientlib: WithScopes: %w", err))
	}
	return p, nil
}

// resolveDirect builds direct mode's tenant with the broker's own parsing
// of the Kognic environment (kognic.FromEnv), the options and env (if not
// nil) overlaid on the variables they override.
func resolveDirect(cfg *clientConfig, ch choice, env *creds.Environment) (*plan, error) {
	now := time.Now()
	if cfg.now != nil {
		now = cfg.now()
	}
	overlay, from, err := credentialsOverlay(ch, now, env, envFileName(cfg))
	if err != nil {
		return nil, err
	}
	serverFrom, err := authServerOverlay(cfg, env, from, overlay)
	if err != nil {
		return nil, err
	}
	lookup := func(key string) (string, bool) {
		if v, ok := overlay[key]; ok {
			return v, true
		}
		return cfg.lookup(key)
	}
	kc, err := kognic.FromEnv(lookup, kognic.Options{Now: now})
	if errors.Is(err, creds.ErrNoCredentials) {
		return nil, ErrNotConfigured
	}
	if err != nil {
		return nil, fmt.Errorf("clientlib: direct mode: %w", err)
	}
	from = cmp.Or(from, kc.Credentials.Source)
	scopes, err := directScopes(cfg, env, from, kc.Credentials.Scopes)
	if err != nil {
		return nil, err
	}
	return &plan{mode: modeDirect, from: from, serverFrom: serverFrom, direct: broker.Tenant{
		Name: directTenant, TokenURL: kc.TokenURL, ClientID: kc.Credentials.ID, ClientSecret: kc.Credentials.Secret,
		Scopes: scopes, AuthStyle: oauth2.AuthStyleInParams,
	}}, nil
}

// credentialsOverlay returns the credentials variables that the option or
// env replaces, and where the credentials come from ("": the variables).
// Files are loaded here first, for an error naming the option.
func credentialsOverlay(ch choice, now time.Time, env *creds.Environment, envFile string) (map[string]string, string, error) {
	overlay := map[string]string{}
	load := func(from, file string) error {
		if _, err := creds.LoadFile(file, creds.WithClock(func() time.Time { return now })); err != nil {
			return fmt.Errorf("clientlib: %s: %w", from, err)
		}
		overlay[creds.EnvCredentials] = file
		return nil
	}
	from := ""
	switch ch.option {
	case "WithClientCredentials":
		if strings.TrimSpace(ch.clientID) == "" || strings.TrimSpace(ch.secret) == "" {
			return nil, "", errors.New("clientlib: WithClientCredentials: the client ID and the client secret must both be non-empty")
		}
		overlay[creds.EnvCredentials] = ""
		overlay[creds.EnvClientID] = ch.clientID
		overlay[creds.EnvClientSecret] = ch.secret
		from = ch.option
	case "WithCredentialsFile":
		from = ch.option
		if err := load(from, ch.file); err != nil {
			return nil, "", err
		}
	}
	if env != nil {
		from = fmt.Sprintf("environment %q of %s", env.Name, envFile)
		switch {
		case ch.file != "": // WithCredentialsFile, with an environment that names none
			if err := load("WithCredentialsFile", ch.file); err != nil {
				return nil, "", err
			}
			from += " with credentials file " + ch.file
		case env.Credentials != "":
			if err := load(from, env.Credentials); err != nil {
				return nil, "", err
			}
		}
	}
	return overlay, from, nil
}

// authServerOverlay sets the auth server of WithAuthServer, else of env,
// in overlay, and says what set it. It receives the client secret: plain
// http only to loopback.
func authServerOverlay(cfg *clientConfig, env *creds.Environment, from string, overlay map[string]string) (serverFrom string, _ error) {
	server, serverFrom := cfg.env(kognic.EnvAuthServer), kognic.EnvAuthServer
	field := "" // the option or field that names the server, for errors
	switch {
	case cfg.authServer != "":
		server, serverFrom, field = cfg.authServer, "WithAuthServer", "WithAuthServer"
	case env != nil:
		server, serverFrom, field = env.AuthServer, from, from+": auth_server"
	case server == "":
		serverFrom = "the default, as " + kognic.EnvAuthServer + " is unset"
	}
	if field != "" {
		if err := checkAuthServer(server); err != nil {
			return "", fmt.Errorf("clientlib: %s: %w", field, err)
		}
		overlay[kognic.EnvAuthServer] = server
	}
	if u, err := url.Parse(server); err == nil && u.Scheme == "http" && !upstream.IsLoopbackHost(u.Hostname()) {
		return "", fmt.Errorf("%w: the auth server %s://%s (%s) is plain http and would receive the client secret unencrypted; use https (plain http is accepted only for loopback)",
			ErrInsecureTransport, u.Scheme, u.Host, serverFrom)
	}
	return serverFrom, nil
}

// directScopes are direct mode's scopes: WithScopes, else env's, else the
// credentials file's.
func directScopes(cfg *clientConfig, env *creds.Environment, from string, fileScopes []string) ([]string, error) {
	switch {
	case cfg.source.scopesSet:
		scopes, err := names.NormalizeScopes(cfg.source.scopes)
		if err != nil {
			return nil, withKind(ErrInvalidArgument, fmt.Errorf("clientlib: WithScopes: %w", err))
		}
		return scopes, nil
	case env != nil && len(env.Scopes) > 0:
		scopes, err := names.NormalizeScopes(env.Scopes)
		if err != nil {
			return nil, fmt.Errorf("clientlib: %s: scopes: %w", from, err)
		}
		return scopes, nil
	}
	return fileScopes, nil
}

// checkAuthServer checks an auth server with the one URL rule; plain http
// is refused later, naming where the URL came from.
func checkAuthServer(s string) error {
	if err := upstream.CheckURL(s, upstream.URLRules{Base: true, AllowInsecureHTTP: true}); err != nil {
		return fmt.Errorf("%w; e.g. %s", err, kognic.DefaultAuthServer)
	}
	return nil
}

// envFileName is WithEnvironmentsFile's file, else the default.
func envFileName(cfg *clientConfig) string {
	if cfg.envFile != "" {
		return cfg.envFile
	}
	return creds.DefaultEnvironmentsPath(cfg.lookup)
}

// loadEnvironments reads the environments file; the default one may be
// missing.
func loadEnvironments(cfg *clientConfig) (*creds.Environments, error) {
	envs, err := creds.LoadEnvironments(envFileName(cfg))
	if errors.Is(err, fs.ErrNotExist) && cfg.envFile == "" {
		return &creds.Environments{Path: envFileName(cfg)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("clientlib: environments file: %w", err)
	}
	return envs, nil
}
