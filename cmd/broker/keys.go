package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/cli"
)

// keys is `broker keys`: the public JWKS of a private_key_jwt tenant's
// keys (from the config) or of one key file, for registering with the
// identity provider. The private parts are never printed.
func keys(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "broker config file (YAML) whose --tenant's client_assertion_key_file(s) to print")
	tenant := fs.String("tenant", "", "the private_key_jwt tenant of --config")
	keyFile := fs.String("key-file", "", "a PEM private key file to print instead of a tenant's")
	keyID := fs.String("key-id", "", "with --key-file: the kid (default: the key's RFC 7638 thumbprint, as the broker signs with)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage:\n  broker keys --config broker.yaml --tenant NAME\n  broker keys --key-file key.pem [--key-id KID]\n\n"+
			"Prints the public JSON Web Key Set of the keys, to register with the identity provider.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return cli.ErrUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var cs []upstream.Credential
	var err error
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("keys: unexpected argument %q", fs.Arg(0))
	case (*configPath == "") == (*keyFile == ""):
		return errors.New("keys: give either --config with --tenant, or --key-file")
	case *keyFile != "":
		if *tenant != "" {
			return errors.New("keys: --tenant goes with --config, not --key-file")
		}
		cs, err = keyFileCredential(*keyFile, *keyID, log)
	case *tenant == "":
		return errors.New("keys: --config needs --tenant NAME, the private_key_jwt tenant whose keys to print")
	case *keyID != "":
		return errors.New("keys: --key-id goes with --key-file; a tenant's kid is its key_id (or the key's thumbprint)")
	default:
		cs, err = tenantCredentials(*configPath, *tenant, log)
	}
	if err != nil {
		return err
	}
	out, err := upstream.JWKS(cs...)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// keyFileCredential reads one key file, warning if group or others can
// read it.
func keyFileCredential(path, kid string, log *slog.Logger) ([]upstream.Credential, error) {
	k, err := creds.LoadPrivateKeyFile(path)
	if err != nil {
		return nil, err
	}
	if err := creds.CheckSecretFiles(log, false, path); err != nil {
		return nil, err
	}
	return []upstream.Credential{{Key: k, KeyID: kid}}, nil
}

// tenantCredentials loads the config and returns the tenant's keys, its
// current one first. Other tenants' broken files do not matter here.
func tenantCredentials(path, name string, log *slog.Logger) ([]upstream.Credential, error) {
	cfg, err := config.LoadWith(path, config.Options{Logger: log, KeepTenantsOnFileError: true})
	if err != nil {
		return nil, err
	}
	for _, t := range cfg.Tenants {
		switch {
		case t.Name != name:
			continue
		case t.LoadErr != nil:
			return nil, t.LoadErr
		case t.ClientKey.IsZero():
			return nil, fmt.Errorf("keys: tenant %q authenticates with a client secret (auth_style %s), not private_key_jwt; it has no key to register", name, t.AuthStyle)
		}
		return append([]upstream.Credential{{Name: t.CredentialsSource, ClientID: t.ClientID, Key: t.ClientKey, KeyID: t.KeyID}}, t.Fallbacks...), nil
	}
	return nil, fmt.Errorf("keys: no tenant %q in %s", name, path)
}
