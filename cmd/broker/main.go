// Command broker runs the tokenbroker gRPC server and talks to it.
//
//	broker serve [--config broker.yaml | --dev] [--listen ADDR]...
//	broker token [--addr ADDR --tenant NAME | [--credentials FILE] [--env NAME]] [--scopes a b] [--decode]
//	broker call METHOD URL [-d DATA|@FILE] [-H 'Key: Value']... [--format json|jsonl|csv|tsv|table] [--env NAME] [--addr ADDR --tenant NAME]
//	broker keys [--config broker.yaml --tenant NAME | --key-file key.pem [--key-id KID]]
//	broker version
//
// The client commands live in internal/cli.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/cli"
)

const usage = `tokenbroker: holds OAuth 2.0 client credentials and serves fresh access tokens over gRPC.

Usage:
  broker serve [--config broker.yaml] [--dev] [--listen ADDR]...
                                                run the broker (ADDR: host:port or unix:///path, one of each)
  broker token [--addr ADDR --tenant NAME]      print a token from a running broker (--addr or TOKENBROKER_ADDR; unix:///path for its socket)
  broker token [--credentials FILE] [--env NAME] [--server URL]
                                                print a token straight from the auth server, like kognic-auth get-access-token
  broker call METHOD URL [-d DATA|@FILE] [-H 'Key: Value']... [--format json|jsonl|csv|tsv|table] [--env NAME] [--addr ADDR --tenant NAME]
                                                an authenticated HTTP request, like kog
  broker keys --config broker.yaml --tenant NAME | --key-file key.pem [--key-id KID]
                                                print a private_key_jwt tenant's public JWKS, to register with the IdP
  broker version

Run "broker <command> --help" for the command's flags.
`

// clientGrace is how long a client command (token, call) may take to
// end after SIGINT or SIGTERM: a read blocked on a FIFO (-d @FIFO) or a
// silent server cannot hold it.
const clientGrace = time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] != "serve" { // serve drains within its own shutdown timeout
		context.AfterFunc(ctx, func() {
			time.Sleep(clientGrace)
			fmt.Fprintln(os.Stderr, "broker: interrupted")
			os.Exit(130)
		})
	}
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, cli.ErrUsage) { // else the usage was printed
			fmt.Fprintln(os.Stderr, "broker:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.ErrUsage
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "token":
		return cli.Token(ctx, args[1:], getenv, stdout, stderr)
	case "call":
		return cli.Call(ctx, args[1:], getenv, stdout, stderr)
	case "keys":
		return keys(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionLine())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return cli.ErrUsage
}

// version and commit are stamped by release builds:
// -ldflags "-X main.stampedVersion=v1.2.3 -X main.commit=abc123".
var stampedVersion, commit string

// version is the stamped version, else what the Go toolchain recorded.
func version() string {
	if stampedVersion != "" {
		return stampedVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// versionLine names the build: version, commit and Go version.
func versionLine() string {
	c := commit
	if bi, ok := debug.ReadBuildInfo(); ok && c == "" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				c = s.Value
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("tokenbroker %s commit %s %s", version(), c, runtime.Version())
}
