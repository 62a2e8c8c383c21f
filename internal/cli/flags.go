package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/clientlib"
)

// common are the flags of both commands: where the token comes from.
type common struct {
	addr, tenant string
	scopes       scopeList
	timeout      time.Duration
	direct       directFlags
	client       clientFlags
	dialOpts     []grpc.DialOption // of the client flags given, with --addr
}

func (c *common) register(fs *flag.FlagSet, getenv func(string) string, timeout time.Duration, timeoutUsage string) {
	fs.StringVar(&c.addr, "addr", getenv(clientlib.EnvBrokerAddr), "broker address, host:port or unix:///path; default $"+clientlib.EnvBrokerAddr+"; without it tokens come straight from the auth server")
	fs.StringVar(&c.tenant, "tenant", getenv(clientlib.EnvBrokerTenant), "tenant name, with --addr (default $"+clientlib.EnvBrokerTenant+", else \"default\")")
	fs.Var(&c.scopes, "scopes", "scopes to request, comma- or space-separated, repeatable; default: the environment's, else the credentials file's (direct) or the tenant's (broker)")
	fs.Var(&c.scopes, "scope", "same as --scopes")
	fs.DurationVar(&c.timeout, "timeout", timeout, timeoutUsage)
	c.direct.register(fs)
	c.client.register(fs)
}

// check refuses the flags of the other mode, and builds the connection's
// dial options with --addr.
func (c *common) check(stderr io.Writer) error {
	if c.addr == "" {
		if c.client.given() {
			return errors.New("the --tls* and --api-key-file flags are for a broker; give --addr, or drop them for direct mode")
		}
		return nil // --env with --credentials: clientlib combines them, or says why not
	}
	if f := c.direct.given(); f != "" {
		return fmt.Errorf("%s applies to direct mode, but --addr (or %s) asks the broker; drop one of them", f, clientlib.EnvBrokerAddr)
	}
	var err error
	c.dialOpts, err = c.client.dialOptions(c.addr, stderr)
	return err
}

// directOptions are the clientlib options of direct mode. With neither
// --credentials nor --env, the environment variables decide; with both,
// the environment gives the auth server and scopes, the file the
// credentials.
func (c *common) directOptions(getenv func(string) string) []clientlib.Option {
	lookup := func(k string) (string, bool) { v := getenv(k); return v, v != "" }
	// A person waits: an auth server that cannot answer fails at once,
	// as in kognic-auth; 5xx, 429 and timeouts are retried until --timeout.
	opts := []clientlib.Option{clientlib.WithEnv(lookup), clientlib.WithFailFast()}
	d := c.direct
	if d.credentials != "" {
		opts = append(opts, clientlib.WithCredentialsFile(d.credentials))
	}
	if d.env != "" {
		opts = append(opts, clientlib.WithEnvironment(d.env))
	}
	if d.envFile != "" {
		opts = append(opts, clientlib.WithEnvironmentsFile(d.envFile))
	}
	if d.server != "" {
		opts = append(opts, clientlib.WithAuthServer(d.server))
	}
	if len(c.scopes) > 0 {
		opts = append(opts, clientlib.WithScopes(c.scopes...))
	}
	return opts
}

// scopeList is the value of --scopes and --scope: each use adds its
// comma- or space-separated scopes.
type scopeList []string

func (s *scopeList) String() string { return strings.Join(*s, " ") }
func (s *scopeList) Set(v string) error {
	*s = append(*s, strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })...)
	return nil
}

// spreadScopes rewrites kognic-auth's "--scopes a b" (argparse's
// nargs="+": the values up to the next flag) into "--scopes a --scopes b"
// for the flag package, which stops at the first non-flag argument. It
// walks args as the flag package does, so a value of another flag is never
// taken for a scope. Only for commands without positional arguments.
func spreadScopes(fs *flag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		out = append(out, a)
		if a == "--" {
			return append(out, args[i+1:]...)
		}
		name, hasValue := flagName(a)
		f := fs.Lookup(name)
		if f == nil || hasValue || isBoolFlag(f) || i+1 == len(args) {
			continue
		}
		i++
		out = append(out, args[i]) // the flag's value
		if name != "scopes" && name != "scope" {
			continue
		}
		for i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			i++
			out = append(out, a, args[i])
		}
	}
	return out
}

// flagName is the name in a flag argument ("-x", "--x", "--x=v"), and
// whether it carries its value; "" for any other argument.
func flagName(arg string) (name string, hasValue bool) {
	if len(arg) < 2 || arg[0] != '-' {
		return "", false
	}
	name = strings.TrimPrefix(arg[1:], "-")
	name, _, hasValue = strings.Cut(name, "=")
	return name, hasValue
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// parseInterleaved parses flags that may come before, between and after
// the positional arguments, as kog accepts them, and returns the latter.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// flagError is the error of a flag set's Parse: flag.ErrHelp after -h, or
// ErrUsage after an error the flag package has printed.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return ErrUsage
}

// usageError is what a command returns when its arguments fail: nil after
// -h, ErrUsage when the usage is printed, else err prefixed with cmd.
func usageError(cmd string, err error) error {
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil
	case errors.Is(err, ErrUsage):
		return ErrUsage
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

// directFlags are the flags of direct mode, kognic-auth's names.
type directFlags struct {
	credentials, env, envFile, server string
}

func (d *directFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.credentials, "credentials", "", "Kognic credentials file (direct mode); default $KOGNIC_CREDENTIALS, else $KOGNIC_CLIENT_ID and $KOGNIC_CLIENT_SECRET")
	fs.StringVar(&d.env, "env", "", "named environment of the environments file (direct mode)")
	fs.StringVar(&d.envFile, "env-config-file-path", "", "environments file (default $"+creds.EnvXDGConfigHome+"/kognic/environments.json, else ~/.config/kognic/environments.json)")
}

// given names a direct-mode flag that was set, or returns "".
func (d *directFlags) given() string {
	for _, f := range []struct{ name, v string }{{"--credentials", d.credentials}, {"--env", d.env}, {"--env-config-file-path", d.envFile}, {"--server", d.server}} {
		if f.v != "" {
			return f.name
		}
	}
	return ""
}

// clientFlags are the flags of the connection to a broker.
type clientFlags struct {
	tls                       bool
	ca, cert, key, serverName string
	apiKeyFile                string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&c.tls, "tls", false, "connect to the broker with TLS, verifying it against the system's roots (implied by the other --tls-* flags)")
	fs.StringVar(&c.ca, "tls-ca", "", "PEM file of the CA(s) that sign the broker's certificate (implies TLS)")
	fs.StringVar(&c.cert, "tls-cert", "", "PEM client certificate for mutual TLS, with --tls-key (implies TLS)")
	fs.StringVar(&c.key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.serverName, "tls-server-name", "", "name to verify the broker's certificate against, if not the host in --addr (implies TLS)")
	fs.StringVar(&c.apiKeyFile, "api-key-file", "", "file holding an API key for the broker, sent as \"authorization: Bearer <key>\"; needs TLS unless --addr is a loopback address or a Unix socket")
}

// useTLS reports whether any TLS flag was set.
func (c *clientFlags) useTLS() bool {
	return c.tls || c.ca != "" || c.cert != "" || c.key != "" || c.serverName != ""
}

// given reports whether any of the flags was set.
func (c *clientFlags) given() bool { return c.useTLS() || c.apiKeyFile != "" }

// dialOptions returns the options of the flags given: TLS with a --tls*
// flag, the bearer credentials with --api-key-file.
func (c *clientFlags) dialOptions(addr string, stderr io.Writer) ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if c.useTLS() && isSocket(addr) {
		return nil, fmt.Errorf("the --tls* flags do not apply to %s: the broker serves its Unix socket without TLS (the socket does not leave the host); drop them", addr)
	}
	if c.useTLS() {
		cfg, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if c.apiKeyFile == "" {
		return opts, nil
	}
	if host, _, _ := net.SplitHostPort(addr); !c.useTLS() && !upstream.IsLoopbackHost(host) && !isSocket(addr) {
		return nil, fmt.Errorf("--api-key-file: %s is not a loopback address, and without TLS the key would cross the network in clear text; add --tls-ca (or --tls)", addr)
	}
	data, err := creds.ReadFile(c.apiKeyFile, creds.MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("--api-key-file: %w", err)
	}
	key := strings.TrimSpace(string(data))
	if key == "" || strings.ContainsAny(key, " \t\r\n") {
		return nil, fmt.Errorf("--api-key-file %s: must hold one API key on one line", c.apiKeyFile)
	}
	if err := creds.CheckFileMode(c.apiKeyFile); err != nil {
		fmt.Fprintf(stderr, "warning: %v\n", err)
	}
	// The key goes as a bearer token, with clientlib's rule: TLS, or
	// plaintext to loopback (a socket's :authority is localhost) only.
	var perRPC []clientlib.PerRPCOption
	if !c.useTLS() {
		perRPC = append(perRPC, clientlib.WithInsecureLoopback())
	}
	src := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: key, TokenType: "Bearer"})
	return append(opts, grpc.WithPerRPCCredentials(clientlib.PerRPCCredentials(src, perRPC...))), nil
}

// tlsConfig is the TLS configuration of the --tls* flags.
func (c *clientFlags) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.serverName}
	if c.ca != "" {
		pem, err := creds.ReadFile(c.ca, creds.MaxFileSize)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificates found", c.ca)
		}
	}
	if (c.cert == "") != (c.key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together: give both for mutual TLS, or neither")
	}
	if c.cert == "" {
		return cfg, nil
	}
	// tls.LoadX509KeyPair through creds.ReadFile: a FIFO is an error, not a hang.
	certPEM, err := creds.ReadFile(c.cert, creds.MaxFileSize)
	var keyPEM []byte
	if err == nil {
		keyPEM, err = creds.ReadFile(c.key, creds.MaxFileSize)
	}
	var cert tls.Certificate
	if err == nil {
		cert, err = tls.X509KeyPair(certPEM, keyPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", c.cert, c.key, err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

// isSocket reports whether addr is a unix: target, a Unix socket's path.
func isSocket(addr string) bool { return strings.HasPrefix(addr, "unix:") }
