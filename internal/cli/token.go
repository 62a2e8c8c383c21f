package cli

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokenbroker/tokenbroker/clientlib"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// TokenUsage is the usage line of `broker token`.
const TokenUsage = `broker token [--addr ADDR --tenant NAME | [--credentials FILE] [--env NAME]] [--server URL] [--scopes a b] [--decode]`

// Token runs `broker token`: with --addr (or TOKENBROKER_ADDR) it asks the
// broker for a tenant's token; without, it fetches one straight from the
// auth server, as kognic-auth get-access-token does, with the credentials
// of --credentials, of the environment --env, or of the KOGNIC_*
// environment variables. It prints the token, or with --decode its JWT
// header and payload.
func Token(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd, err := parseToken(args, getenv, stderr)
	if err != nil {
		return usageError("token", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cmd.timeout)
	defer cancel()
	var access string
	if cmd.addr != "" {
		access, err = cmd.brokerToken(ctx)
	} else {
		access, err = cmd.directToken(ctx, getenv)
	}
	if err != nil {
		return err
	}
	if !cmd.decode {
		_, err := fmt.Fprintln(stdout, access)
		return err
	}
	return printJWT(stdout, access)
}

// tokenCmd is `broker token` with its flags parsed.
type tokenCmd struct {
	common
	minValid time.Duration
	decode   bool
}

// parseToken parses and checks the flags of `broker token`; it touches no
// network.
func parseToken(args []string, getenv func(string) string, stderr io.Writer) (*tokenCmd, error) {
	var cmd tokenCmd
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "Usage: %s\n\n", TokenUsage); fs.PrintDefaults() }
	cmd.register(fs, getenv, 30*time.Second, "how long to wait for the token")
	fs.StringVar(&cmd.direct.server, "server", "", "auth server (direct mode; default: the environment's, else $KOGNIC_AUTH_SERVER, else https://auth.app.kognic.com)")
	fs.DurationVar(&cmd.minValid, "min-valid", 0, "minimum remaining validity of the token (default 60s)")
	fs.BoolVar(&cmd.decode, "decode", false, "print the JWT header and payload as JSON instead of the token")
	if err := fs.Parse(spreadScopes(fs, args)); err != nil {
		return nil, flagError(err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return &cmd, cmd.check(stderr)
}

// brokerToken asks the broker with GetToken, passing --min-valid on.
func (cmd *tokenCmd) brokerToken(ctx context.Context) (string, error) {
	// Plaintext unless a --tls* flag says otherwise.
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, cmd.dialOpts...)
	conn, err := grpc.NewClient(cmd.addr, opts...)
	if err != nil {
		return "", fmt.Errorf("token: --addr %q: %w", cmd.addr, err)
	}
	defer conn.Close()
	req := &tbv1.GetTokenRequest{Tenant: cmp.Or(cmd.tenant, clientlib.DefaultTenant), Scopes: cmd.scopes}
	if cmd.minValid != 0 {
		req.MinValid = durationpb.New(cmd.minValid)
	}
	resp, err := tbv1.NewTokenBrokerServiceClient(conn).GetToken(ctx, req)
	if err != nil {
		st := status.Convert(err)
		return "", fmt.Errorf("token: %s: %s", st.Code(), st.Message())
	}
	return resp.GetToken().GetAccessToken(), nil
}

// directToken fetches a token from the auth server with clientlib's
// direct mode.
func (cmd *tokenCmd) directToken(ctx context.Context, getenv func(string) string) (string, error) {
	opts := cmd.directOptions(getenv)
	if cmd.minValid > 0 {
		opts = append(opts, clientlib.WithMinValid(cmd.minValid))
	}
	hc, err := clientlib.NewHTTPClient(ctx, opts...)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	defer hc.Close()
	tok, err := hc.Source().TokenContext(ctx)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return tok.AccessToken, nil
}

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
