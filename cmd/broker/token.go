package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/hygiene"
)

func token(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:50051", "broker address")
	tenant := fs.String("tenant", "default", "tenant name")
	scopes := fs.String("scopes", "", "comma- or space-separated scopes; empty for the tenant's default scopes")
	minValid := fs.Duration("min-valid", 0, "minimum remaining validity of the token (default: the broker's, 60s)")
	decode := fs.Bool("decode", false, "print the JWT header and claims instead of the token")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the broker")
	var c clientFlags
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS, verifying the broker against the system's roots (implied by the other --tls-* flags)")
	fs.StringVar(&c.ca, "tls-ca", "", "PEM file of the CA(s) that sign the broker's certificate (implies TLS)")
	fs.StringVar(&c.cert, "tls-cert", "", "PEM client certificate for mutual TLS, with --tls-key (implies TLS)")
	fs.StringVar(&c.key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.serverName, "tls-server-name", "", "name to verify the broker's certificate against, if not the host in --addr (implies TLS)")
	fs.StringVar(&c.apiKeyFile, "api-key-file", "", "file holding an API key, sent as \"authorization: Bearer <key>\"; needs TLS unless --addr is a loopback address")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected argument %q", fs.Arg(0))
	}
	dialOpts, err := c.dialOptions(*addr, stderr)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	conn, err := grpc.NewClient(*addr, dialOpts...)
	if err != nil {
		return fmt.Errorf("token: --addr %q: %w", *addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req := &tbv1.GetTokenRequest{Tenant: *tenant, Scopes: strings.FieldsFunc(*scopes, func(r rune) bool { return r == ',' || r == ' ' })}
	if *minValid != 0 {
		req.MinValid = durationpb.New(*minValid)
	}
	resp, err := tbv1.NewTokenBrokerServiceClient(conn).GetToken(ctx, req)
	if err != nil {
		st := status.Convert(err)
		return fmt.Errorf("token: %s: %s", st.Code(), st.Message())
	}
	if !*decode {
		_, err = fmt.Fprintln(stdout, resp.GetToken().GetAccessToken())
		return err
	}
	return printJWT(stdout, resp.GetToken().GetAccessToken())
}

// clientFlags are the connection flags of `broker token`.
type clientFlags struct {
	tls                       bool
	ca, cert, key, serverName string
	apiKeyFile                string
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
	if err := hygiene.CheckFileMode(c.apiKeyFile); err != nil {
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

// printJWT prints a JWT's header and claims as indented JSON. The signature
// is not verified: this is for reading, not for trusting.
func printJWT(w io.Writer, tok string) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return errors.New("token: --decode: the access token is not a JWT (it does not have three dot-separated parts)")
	}
	for i, name := range []string{"header", "claims"} {
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[i], "="))
		if err != nil {
			return fmt.Errorf("token: --decode: JWT %s is not base64url: %w", name, err)
		}
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			return fmt.Errorf("token: --decode: JWT %s is not JSON: %w", name, err)
		}
		fmt.Fprintf(w, "%s:\n%s\n", name, out.String())
	}
	return nil
}
