package cli

import (
	"bytes"
	"context"
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

	"github.com/tokenbroker/tokenbroker/clientlib"
)

// CallUsage is the usage line of `broker call`.
const CallUsage = `broker call METHOD URL [-d DATA|@FILE] [-H 'Key: Value']... [--format json|jsonl|csv|tsv|table] [--env NAME] [--addr ADDR --tenant NAME]`

// maxResponse bounds the response body read by `broker call`.
const maxResponse = 64 << 20

// headerList collects repeated -H flags.
type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

// Call runs `broker call`, a small curl that authenticates like kog: the
// token comes from the broker (--addr or TOKENBROKER_ADDR) or straight
// from the auth server of the environment --env names or the URL's host
// selects (clientlib.WithEnvironmentByHost: a host no environment names
// gets no token). It goes only to the URL's origin, not to another one a
// redirect names. A 401 replaces the token and repeats the request once;
// 502, 503 and 504 are retried for idempotent methods. The response body
// is printed in the chosen format on a 2xx status; otherwise the status
// and the start of the body, the token redacted, make the error. The
// token is never printed.
func Call(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "Usage: %s\n\n", CallUsage); fs.PrintDefaults() }
	var data string
	var headers headerList
	fs.StringVar(&data, "d", "", "request body, or @FILE to read it from FILE; JSON gets Content-Type: application/json")
	fs.StringVar(&data, "data", "", "same as -d")
	fs.Var(&headers, "H", "request header 'Key: Value' (repeatable)")
	fs.Var(&headers, "header", "same as -H")
	format := fs.String("format", "json", "output: json (pretty), jsonl (one item a line), csv, tsv or table (markdown) of the list in the response")
	addr := fs.String("addr", getenv(clientlib.EnvBrokerAddr), "broker address; default $"+clientlib.EnvBrokerAddr+"; without it tokens come straight from the auth server")
	tenant := fs.String("tenant", getenv(clientlib.EnvBrokerTenant), "tenant name, with --addr (default $"+clientlib.EnvBrokerTenant+", else \"default\")")
	scopes := fs.String("scopes", "", "comma- or space-separated scopes")
	timeout := fs.Duration("timeout", 60*time.Second, "how long the whole call may take")
	var d directFlags
	d.register(fs, false)
	var c clientFlags
	c.register(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return ErrUsage
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "call: want METHOD and URL, got %d arguments\nUsage: %s\n", len(pos), CallUsage)
		return ErrUsage
	}
	if !validFormat(*format) {
		return fmt.Errorf("call: --format %q: want json, jsonl, csv, tsv or table", *format)
	}
	req, err := newCallRequest(ctx, pos[0], pos[1], data, headers)
	if err != nil {
		return fmt.Errorf("call: %w", err)
	}
	opts, err := callOptions(*addr, *tenant, *scopes, d, c, getenv, stderr)
	if err != nil {
		return fmt.Errorf("call: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	hc, err := clientlib.NewHTTPClient(ctx, opts...)
	if err != nil {
		return fmt.Errorf("call: %w", err)
	}
	defer hc.Close()
	return send(hc, req.WithContext(ctx), *format, stdout)
}

// newCallRequest builds the request of METHOD URL, -d and -H.
func newCallRequest(ctx context.Context, method, rawURL, data string, headers headerList) (*http.Request, error) {
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
	req, err := http.NewRequestWithContext(ctx, m, u.String(), bytes.NewReader(body))
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
	if body != nil && req.Header.Get("Content-Type") == "" && jsonValid(body) {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// callOptions are the clientlib options of `broker call`: a broker with
// --addr, else direct mode with --env or --credentials, else by the URL's
// host, as kog does, but with no token for a host no environment names.
func callOptions(addr, tenant, scopes string, d directFlags, c clientFlags, getenv func(string) string, stderr io.Writer) ([]clientlib.Option, error) {
	// Status errors: clientlib builds the excerpt of a failed response, with
	// the token redacted, in one place.
	opts := []clientlib.Option{clientlib.WithStatusErrors(),
		clientlib.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))}
	if sc := splitScopes(scopes); len(sc) > 0 {
		opts = append(opts, clientlib.WithScopes(sc...))
	}
	if addr != "" {
		if f := d.given(); f != "" {
			return nil, fmt.Errorf("%s applies to direct mode, but --addr (or %s) asks the broker; drop one of them", f, clientlib.EnvBrokerAddr)
		}
		opts = append(opts, clientlib.WithBroker(addr, tenant))
		if c.given() {
			dialOpts, err := c.dialOptions(addr, stderr)
			if err != nil {
				return nil, err
			}
			opts = append(opts, clientlib.WithGRPCDialOptions(dialOpts...))
		}
		return opts, nil
	}
	if c.given() {
		return nil, errors.New("the --tls* and --api-key-file flags are for a broker; give --addr, or drop them for direct mode")
	}
	direct, err := d.options(getenv, nil)
	if err != nil {
		return nil, err
	}
	opts = append(opts, direct...)
	if d.env == "" && d.credentials == "" {
		opts = append(opts, clientlib.WithEnvironmentByHost())
	}
	return opts, nil
}

// send sends req and prints a 2xx response's body in format; any other
// status is an error with the start of the body, the token redacted.
func send(hc *clientlib.HTTPClient, req *http.Request, format string, stdout io.Writer) error {
	resp, err := hc.Client().Do(req)
	if se, ok := errors.AsType[*clientlib.StatusError](err); ok {
		msg := fmt.Sprintf("call: %s %s: %s", se.Method, se.URL, se.Status)
		if se.Body != "" {
			msg += ": " + se.Body
		}
		return errors.New(msg)
	}
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return fmt.Errorf("call: %s %s: %w", req.Method, redact(req.URL), ue.Err) // the URL without its query
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

// redact drops user info and query from u for messages.
func redact(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.ForceQuery = nil, "", false
	return c.String()
}
