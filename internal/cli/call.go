package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/clientlib"
)

// CallUsage is the usage line of `broker call`.
const CallUsage = `broker call METHOD URL [-d DATA|@FILE] [-H 'Key: Value']... [--format json|jsonl|csv|tsv|table] [--env NAME] [--scopes a,b] [--addr ADDR --tenant NAME]`

// maxResponse bounds the response body read by `broker call`.
const maxResponse = 64 << 20

// headerList collects repeated -H flags.
type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

// Call runs `broker call`, a small curl that authenticates like kog, with
// a token from the broker (--addr) or from the auth server that --env or
// the URL's host selects; the token goes only to the URL's origin and is
// never printed. A 2xx body is printed in the chosen format; otherwise the
// status and the start of the body, the token redacted, make the error.
func Call(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd, err := parseCall(args, getenv, stderr)
	if err != nil {
		return usageError("call", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cmd.timeout)
	defer cancel()
	hc, err := clientlib.NewHTTPClient(ctx, cmd.options(getenv, stderr)...)
	if err != nil {
		return fmt.Errorf("call: %w", err)
	}
	defer hc.Close()
	err = send(hc.Client(), cmd.req.WithContext(ctx), cmd.format, stdout)
	if err != nil && hc.Echoes(err.Error()) {
		// A URL or header the server chose spelt the token (a redirect to
		// /s/<token>, a Location that does not parse).
		return fmt.Errorf("call: %s %s failed; the details are withheld: they echo the token", cmd.req.Method, upstream.RedactURL(cmd.req.URL.String()))
	}
	return err
}

// callCmd is `broker call` with its arguments parsed.
type callCmd struct {
	common
	format string
	req    *http.Request // without a context yet
}

// parseCall parses and checks the arguments of `broker call`, reading the
// file of -d @FILE; it touches no network.
func parseCall(args []string, getenv func(string) string, stderr io.Writer) (*callCmd, error) {
	var cmd callCmd
	var data string
	var headers headerList
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "Usage: %s\n\n", CallUsage); fs.PrintDefaults() }
	fs.StringVar(&data, "d", "", "request body, or @FILE to read it from FILE; JSON gets Content-Type: application/json")
	fs.StringVar(&data, "data", "", "same as -d")
	fs.Var(&headers, "H", "request header 'Key: Value' (repeatable)")
	fs.Var(&headers, "header", "same as -H")
	fs.StringVar(&cmd.format, "format", "json", "output: json (pretty), jsonl (one item a line), csv, tsv or table (markdown) of the list in the response")
	cmd.register(fs, getenv, 60*time.Second, "how long the whole call may take")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return nil, flagError(err)
	}
	if len(pos) != 2 {
		hint := ""
		if len(pos) > 2 && len(cmd.scopes) > 0 {
			// kognic-auth's "--scopes a b" cannot be told from METHOD URL.
			hint = " (here --scopes takes one argument: --scopes a,b or --scopes 'a b', or repeat --scope)"
		}
		fmt.Fprintf(stderr, "call: want METHOD and URL, got %d arguments%s\nUsage: %s\n", len(pos), hint, CallUsage)
		return nil, ErrUsage
	}
	if !validFormat(cmd.format) {
		return nil, fmt.Errorf("--format %q: want json, jsonl, csv, tsv or table", cmd.format)
	}
	if cmd.req, err = newCallRequest(pos[0], pos[1], data, headers); err != nil {
		return nil, err
	}
	return &cmd, cmd.check(stderr)
}

// newCallRequest builds the request of METHOD URL, -d and -H.
func newCallRequest(method, rawURL, data string, headers headerList) (*http.Request, error) {
	m := strings.ToUpper(method)
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions:
	default:
		return nil, fmt.Errorf("method %q: want get, post, put, patch, delete, head or options", method)
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("URL %q: want an absolute http(s) URL, e.g. https://app.kognic.com/v1/projects", rawURL)
	}
	body, err := readData(data)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(m, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body == nil {
		req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("header %q: want 'Key: Value'", h)
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if body != nil && req.Header.Get("Content-Type") == "" && json.Valid(body) {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// options are the clientlib options of `broker call`: a broker with
// --addr, else direct mode with --env or --credentials, else by the URL's
// host, as kog does, but with no token for a host no environment names.
// Status errors: clientlib builds the excerpt of a failed response, with
// the token redacted, in one place.
func (cmd *callCmd) options(getenv func(string) string, stderr io.Writer) []clientlib.Option {
	opts := []clientlib.Option{clientlib.WithStatusErrors(),
		clientlib.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))}
	switch {
	case cmd.addr != "":
		opts = append(opts, clientlib.WithBroker(cmd.addr, cmd.tenant), clientlib.WithGRPCDialOptions(cmd.dialOpts...))
		if len(cmd.scopes) > 0 {
			opts = append(opts, clientlib.WithScopes(cmd.scopes...))
		}
	case cmd.direct.env == "" && cmd.direct.credentials == "":
		opts = append(append(opts, cmd.directOptions(getenv)...), clientlib.WithEnvironmentByHost())
	default:
		opts = append(opts, cmd.directOptions(getenv)...)
	}
	return opts
}

// send sends req and prints a 2xx response's body in format; any other
// status is an error with the start of the body, the token redacted.
func send(hc *http.Client, req *http.Request, format string, stdout io.Writer) error {
	resp, err := hc.Do(req)
	if se, ok := errors.AsType[*clientlib.StatusError](err); ok {
		return errors.New("call: " + strings.TrimPrefix(se.Error(), "clientlib: "))
	}
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return fmt.Errorf("call: %s %s: %w", req.Method, upstream.RedactURL(req.URL.String()), ue.Err) // the URL without its query
	}
	if err != nil {
		return fmt.Errorf("call: %w", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("call: reading the response: %w", err)
	}
	if len(out) > maxResponse {
		return fmt.Errorf("call: the response is larger than %d bytes", maxResponse)
	}
	return printResponse(stdout, resp.Header.Get("Content-Type"), out, format)
}

// readData returns -d's body: nil for none, a file's contents for @FILE.
func readData(data string) ([]byte, error) {
	if data == "" {
		return nil, nil
	}
	if name, ok := strings.CutPrefix(data, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("-d @%s: %w", name, err)
		}
		return b, nil
	}
	return []byte(data), nil
}
