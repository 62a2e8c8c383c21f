package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/clientlib"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// TokenUsage is the usage line of `broker token`.
const TokenUsage = `broker token [--addr ADDR --tenant NAME | --credentials FILE | --env NAME] [--server URL] [--scopes a,b] [--decode]`

// Token runs `broker token`: with --addr (or TOKENBROKER_ADDR) it asks the
// broker for a tenant's token; without, it fetches one straight from the
// auth server, as kognic-auth get-access-token does, with the credentials
// of --credentials, of the environment --env, or of the KOGNIC_*
// environment variables. It prints the token, or with --decode its JWT
// header and payload.
func Token(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "Usage: %s\n\n", TokenUsage); fs.PrintDefaults() }
	addr := fs.String("addr", getenv(clientlib.EnvBrokerAddr), "broker address; default $"+clientlib.EnvBrokerAddr+"; without it the token comes straight from the auth server")
	tenant := fs.String("tenant", getenv(clientlib.EnvBrokerTenant), "tenant name, with --addr (default $"+clientlib.EnvBrokerTenant+", else \"default\")")
	scopes := fs.String("scopes", "", "comma- or space-separated scopes; default: the environment's, else the credentials file's (direct) or the tenant's (broker)")
	minValid := fs.Duration("min-valid", 0, "minimum remaining validity of the token (default 60s)")
	decode := fs.Bool("decode", false, "print the JWT header and payload as JSON instead of the token")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the token")
	var d directFlags
	d.register(fs, true)
	var c clientFlags
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return ErrUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected argument %q", fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var access string
	if *addr != "" {
		if f := d.given(); f != "" {
			return fmt.Errorf("token: %s applies to direct mode, but --addr (or %s) asks the broker; drop one of them", f, clientlib.EnvBrokerAddr)
		}
		var err error
		if access, err = brokerToken(ctx, *addr, *tenant, *scopes, *minValid, c, stderr); err != nil {
			return err
		}
	} else {
		if c.given() {
			return errors.New("token: the --tls* and --api-key-file flags are for a broker; give --addr, or drop them for direct mode")
		}
		opts, err := d.options(getenv, splitScopes(*scopes))
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		if *minValid > 0 {
			opts = append(opts, clientlib.WithMinValid(*minValid))
		}
		hc, err := clientlib.NewHTTPClient(ctx, opts...)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		defer hc.Close()
		tok, err := hc.Source().TokenContext(ctx)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		access = tok.AccessToken
	}
	if !*decode {
		_, err := fmt.Fprintln(stdout, access)
		return err
	}
	return printJWT(stdout, access)
}

func brokerToken(ctx context.Context, addr, tenant, scopes string, minValid time.Duration, c clientFlags, stderr io.Writer) (string, error) {
	if tenant == "" {
		tenant = clientlib.DefaultTenant
	}
	dialOpts, err := c.dialOptions(addr, stderr)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	conn, err := grpc.NewClient(addr, dialOpts...)
	if err != nil {
		return "", fmt.Errorf("token: --addr %q: %w", addr, err)
	}
	defer conn.Close()
	req := &tbv1.GetTokenRequest{Tenant: tenant, Scopes: splitScopes(scopes)}
	if minValid != 0 {
		req.MinValid = durationpb.New(minValid)
	}
	resp, err := tbv1.NewTokenBrokerServiceClient(conn).GetToken(ctx, req)
	if err != nil {
		st := status.Convert(err)
		return "", fmt.Errorf("token: %s: %s", st.Code(), st.Message())
	}
	return resp.GetToken().GetAccessToken(), nil
}

func splitScopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

// directFlags are the flags of direct mode, kognic-auth's names.
type directFlags struct {
	credentials, env, envFile, server string
}

func (d *directFlags) register(fs *flag.FlagSet, withServer bool) {
	fs.StringVar(&d.credentials, "credentials", "", "Kognic credentials file (direct mode); default $KOGNIC_CREDENTIALS, else $KOGNIC_CLIENT_ID and $KOGNIC_CLIENT_SECRET")
	fs.StringVar(&d.env, "env", "", "named environment of the environments file (direct mode)")
	fs.StringVar(&d.envFile, "env-config-file-path", "", "environments file (default "+creds.DefaultEnvironmentsPath+")")
	if withServer {
		fs.StringVar(&d.server, "server", "", "auth server (direct mode; default: the environment's, else $KOGNIC_AUTH_SERVER, else https://auth.app.kognic.com)")
	}
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

// options are the clientlib options of direct mode. With neither
// --credentials nor --env, the environment variables decide.
func (d *directFlags) options(getenv func(string) string, scopes []string) ([]clientlib.Option, error) {
	lookup := func(k string) (string, bool) { v := getenv(k); return v, v != "" }
	opts := []clientlib.Option{clientlib.WithEnv(lookup)}
	if d.credentials != "" && d.env != "" {
		return nil, errors.New("--credentials and --env both name credentials; give one of them")
	}
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
	if len(scopes) > 0 {
		opts = append(opts, clientlib.WithScopes(scopes...))
	}
	return opts, nil
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
	fs.StringVar(&c.apiKeyFile, "api-key-file", "", "file holding an API key for the broker, sent as \"authorization: Bearer <key>\"; needs TLS unless --addr is a loopback address")
}

// given reports whether any of the flags was set.
func (c *clientFlags) given() bool {
	return c.tls || c.ca != "" || c.cert != "" || c.key != "" || c.serverName != "" || c.apiKeyFile != ""
}

// dialOptions returns the transport (plaintext only when no TLS flag is
// given) and, with --api-key-file, the bearer credentials.
func (c clientFlags) dialOptions(addr string, stderr io.Writer) ([]grpc.DialOption, error) {
	useTLS := c.tls || c.ca != "" || c.cert != "" || c.key != "" || c.serverName != ""
	var opts []grpc.DialOption
	if !useTLS {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.serverName}
		if c.ca != "" {
			pem, err := os.ReadFile(c.ca)
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
		if c.cert != "" {
			cert, err := tls.LoadX509KeyPair(c.cert, c.key)
			if err != nil {
				return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", c.cert, c.key, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if c.apiKeyFile == "" {
		return opts, nil
	}
	if !useTLS && !isLoopbackAddr(addr) {
		return nil, fmt.Errorf("--api-key-file: %s is not a loopback address, and without TLS the key would cross the network in clear text; add --tls-ca (or --tls)", addr)
	}
	data, err := os.ReadFile(c.apiKeyFile)
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
	return append(opts, grpc.WithPerRPCCredentials(bearerKey{key: key, tls: useTLS})), nil
}

// bearerKey sends an API key as "authorization: Bearer <key>". It never
// prints the key.
type bearerKey struct {
	key string
	tls bool
}

func (b bearerKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.key}, nil
}

// RequireTransportSecurity is false only for a loopback plaintext
// connection, which dialOptions allows explicitly.
func (b bearerKey) RequireTransportSecurity() bool { return b.tls }

func (b bearerKey) String() string { return "bearerKey{[REDACTED]}" }

// printJWT prints a JWT's header and payload as one indented JSON object,
// as kognic-auth get-access-token --decode does, but without the
// signature, so that the output is not a usable token. The signature is
// not verified: this is for reading, not for trusting.
func printJWT(w io.Writer, tok string) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return errors.New("token: --decode: the access token is not a JWT (it does not have three dot-separated parts)")
	}
	var decoded struct {
		Header  json.RawMessage `json:"header"`
		Payload json.RawMessage `json:"payload"`
	}
	for i, dst := range []*json.RawMessage{&decoded.Header, &decoded.Payload} {
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[i], "="))
		if err != nil || !json.Valid(raw) {
			return fmt.Errorf("token: --decode: JWT part %d is not base64url-encoded JSON", i+1)
		}
		*dst = raw
	}
	out, err := json.MarshalIndent(decoded, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", out)
	return err
}

// isLoopbackAddr applies upstream's loopback rule to a host:port.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && upstream.IsLoopbackHost(host)
}
