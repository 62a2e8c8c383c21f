package main

import (
	"bytes"
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

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected argument %q", fs.Arg(0))
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
