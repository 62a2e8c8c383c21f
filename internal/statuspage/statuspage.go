package statuspage

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// MaxErrorLen is the most runes of a tenant's last error that the page
// shows; longer errors are cut and end with "…".
const MaxErrorLen = 300

// refreshEvery is how often the page reloads itself.
const refreshEvery = 5 * time.Second

// ContentSecurityPolicy is sent with every response: nothing but the
// page's own stylesheet may load, no script runs, and no site may frame
// the page.
const ContentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'none'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// Tenant is what the page shows of one tenant. It must hold nothing
// secret: no token, no client id or secret, no full token URL.
type Tenant struct {
	Name string
	// State is the broker's name for the tenant's default-scope token
	// state: "ready", "stale", "failing" or "pending".
	State string
	// Expiry of the cached token and time of the next identity-provider
	// request; zero when unknown or none.
	Expiry      time.Time
	NextRefresh time.Time
	// LastError is the last refresh error, already free of secrets. The
	// page still strips URL queries from it and cuts it at MaxErrorLen.
	LastError string
	// ScopeSets and Watches count the tenant's cached scope sets and
	// open watch streams.
	ScopeSets int
	Watches   int
	// Host is the token endpoint's host (and port); empty to show none.
	Host string
}

// Source lists the tenants to show. Tenants is called once per request
// and must be safe for concurrent use.
type Source interface {
	Tenants() []Tenant
}

// SourceFunc adapts a function to Source.
type SourceFunc func() []Tenant

// Tenants calls f.
func (f SourceFunc) Tenants() []Tenant { return f() }

// Option configures Handler.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	version string
	clock   clockwork.Clock
	log     *slog.Logger
	reload  func() Reload
}

// Reload is the outcome of the broker's last configuration reload.
type Reload struct {
	// Result is "success", "error" (the file did not load; the running
	// configuration was kept) or "rejected" (the change would lower the
	// security and needs a restart); "" before any reload.
	Result string    `json:"result"`
	At     time.Time `json:"at"`
	// Error says why, for error and rejected; the page strips URL queries
	// from it and cuts it at MaxErrorLen.
	Error string `json:"error,omitempty"`
}

// WithVersion shows the broker's version in the page header and JSON.
func WithVersion(v string) Option { return optionFunc(func(c *config) { c.version = v }) }

// WithReload shows the last configuration reload's outcome, from f
// (called once per request): in status.json always, on the page when it
// did not succeed.
func WithReload(f func() Reload) Option { return optionFunc(func(c *config) { c.reload = f }) }

// WithLogger sets the logger for rendering failures (default: discard).
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.log = l }) }

var (
	//go:embed static/status.css
	css []byte
	//go:embed templates/status.html
	pageHTML string
	pageTmpl = template.Must(template.New("status.html").Funcs(template.FuncMap{"upper": strings.ToUpper}).Parse(pageHTML))
)

// Handler returns the read-only status page for src. Mount it at a path
// ending in "/" (it links its assets relatively):
//
//	GET /                    the HTML page, reloading itself
//	GET /status.json         the same data as JSON
//	GET /static/status.css   the page's stylesheet
//
// HEAD works wherever GET does; other methods get 405. Every response
// carries ContentSecurityPolicy, nosniff, no-referrer and no-store.
// Handler panics if src is nil, as http.Handle does for a nil handler.
func Handler(src Source, opts ...Option) http.Handler {
	if src == nil {
		panic("statuspage: Handler: nil Source")
	}
	var cfg config
	for _, o := range opts {
		o.apply(&cfg)
	}
	cfg.clock, cfg.log = cmp.Or(cfg.clock, clockwork.NewRealClock()), cmp.Or(cfg.log, slog.New(slog.DiscardHandler))
	h := &handler{src: src, cfg: cfg}
	mux := http.NewServeMux()
	// A GET pattern also matches HEAD; the mux answers other methods
	// with 405 and an Allow header.
	mux.HandleFunc("GET /{$}", h.page)
	mux.HandleFunc("GET /status.json", h.json)
	mux.HandleFunc("GET /static/status.css", func(w http.ResponseWriter, r *http.Request) {
		writeBody(w, r, "text/css; charset=utf-8", css)
	})
	return secureHeaders(mux)
}

func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("Cache-Control", "no-store")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
		hdr.Set("Cross-Origin-Resource-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

type handler struct {
	src Source
	cfg config
}

// row is one tenant prepared for display.
type row struct {
	Tenant
	StateClass          string
	Expiry, NextRefresh timeCell // shown instead of Tenant's
}

// timeCell is a time shown relative to now, with the absolute time kept
// for the datetime attribute and tooltip.
type timeCell struct {
	Text, ISO string
}

type pageData struct {
	Version        string
	GeneratedAt    string
	GeneratedISO   string
	RefreshSeconds int
	Summary        []stateCount
	Total          int
	Rows           []row
	Reload         *reloadNotice // the last reload, if it did not succeed
}

// reloadNotice is a reload that did not succeed, prepared for display.
type reloadNotice struct {
	Result, At, ISO, Error string
}

type stateCount struct {
	State, Class string
	N            int
}

// knownStates are the broker's states, in the order the summary lists them.
var knownStates = []string{"ready", "stale", "failing", "pending"}

// stateRank orders the summary: known states in their order, then the others.
func stateRank(s string) int {
	if i := slices.Index(knownStates, s); i >= 0 {
		return i
	}
	return len(knownStates)
}

func stateClass(s string) string {
	if slices.Contains(knownStates, s) {
		return "state-" + s
	}
	return "state-other"
}

// lastReload returns the last reload's outcome, its error cleaned.
func (h *handler) lastReload() Reload {
	if h.cfg.reload == nil {
		return Reload{}
	}
	r := h.cfg.reload()
	r.Error = cleanError(r.Error)
	return r
}

// snapshot reads the source once and orders its tenants by name.
func (h *handler) snapshot() (time.Time, []Tenant) {
	now := h.cfg.clock.Now()
	ts := slices.Clone(h.src.Tenants())
	slices.SortStableFunc(ts, func(a, b Tenant) int { return strings.Compare(a.Name, b.Name) })
	for i := range ts {
		ts[i].State = strings.ToLower(strings.TrimSpace(ts[i].State))
		if ts[i].State == "" {
			ts[i].State = "unknown"
		}
		ts[i].LastError = cleanError(ts[i].LastError)
		ts[i].Host = cleanHost(ts[i].Host)
	}
	return now, ts
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	now, ts := h.snapshot()
	d := pageData{
		Version:        h.cfg.version,
		GeneratedAt:    now.UTC().Format("2006-01-02 15:04:05 UTC"),
		GeneratedISO:   now.UTC().Format(time.RFC3339),
		RefreshSeconds: int(refreshEvery / time.Second),
		Total:          len(ts),
	}
	if r := h.lastReload(); r.Result != "" && r.Result != "success" {
		d.Reload = &reloadNotice{Result: r.Result, At: r.At.UTC().Format("2006-01-02 15:04:05 UTC"), ISO: r.At.UTC().Format(time.RFC3339), Error: r.Error}
	}
	counts := map[string]int{}
	for _, t := range ts {
		counts[t.State]++
		d.Rows = append(d.Rows, row{Tenant: t, StateClass: stateClass(t.State),
			Expiry: cell(now, t.Expiry, expiresIn), NextRefresh: cell(now, t.NextRefresh, refreshIn)})
	}
	for s, n := range counts {
		d.Summary = append(d.Summary, stateCount{State: s, Class: stateClass(s), N: n})
	}
	slices.SortFunc(d.Summary, func(a, b stateCount) int { // the broker's states first
		return cmp.Or(cmp.Compare(stateRank(a.State), stateRank(b.State)), strings.Compare(a.State, b.State))
	})

	// Render fully before writing, so a failure is a clean 500.
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, d); err != nil {
		h.cfg.log.Error("statuspage: rendering the status page failed", "err", err)
		http.Error(w, "statuspage: rendering failed", http.StatusInternalServerError)
		return
	}
	writeBody(w, r, "text/html; charset=utf-8", buf.Bytes())
}

// jsonTenant is a tenant in /status.json. Times are RFC 3339 UTC; absent
// values are null.
type jsonTenant struct {
	Name             string     `json:"name"`
	State            string     `json:"state"`
	Host             string     `json:"host,omitempty"`
	Expiry           *time.Time `json:"expiry"`
	ExpiresInSeconds *int64     `json:"expires_in_seconds"`
	NextRefresh      *time.Time `json:"next_refresh"`
	LastError        string     `json:"last_error,omitempty"`
	ScopeSets        int        `json:"scope_sets"`
	Watches          int        `json:"watches"`
}

type jsonStatus struct {
	GeneratedAt time.Time      `json:"generated_at"`
	Version     string         `json:"version,omitempty"`
	LastReload  *Reload        `json:"last_reload,omitempty"`
	States      map[string]int `json:"states"`
	Tenants     []jsonTenant   `json:"tenants"`
}

func (h *handler) json(w http.ResponseWriter, r *http.Request) {
	now, ts := h.snapshot()
	out := jsonStatus{GeneratedAt: now.UTC().Truncate(time.Second), Version: h.cfg.version,
		States: map[string]int{}, Tenants: make([]jsonTenant, 0, len(ts))}
	if r := h.lastReload(); r.Result != "" {
		r.At = r.At.UTC().Truncate(time.Second)
		out.LastReload = &r
	}
	for _, t := range ts {
		out.States[t.State]++
		jt := jsonTenant{Name: t.Name, State: t.State, Host: t.Host, LastError: t.LastError,
			Expiry: optTime(t.Expiry), NextRefresh: optTime(t.NextRefresh),
			ScopeSets: t.ScopeSets, Watches: t.Watches}
		if !t.Expiry.IsZero() {
			s := int64(t.Expiry.Sub(now) / time.Second)
			jt.ExpiresInSeconds = &s
		}
		out.Tenants = append(out.Tenants, jt)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		h.cfg.log.Error("statuspage: encoding status.json failed", "err", err)
		http.Error(w, "statuspage: encoding failed", http.StatusInternalServerError)
		return
	}
	writeBody(w, r, "application/json", append(b, '\n'))
}

// writeBody answers with b, or only its headers to HEAD.
func writeBody(w http.ResponseWriter, r *http.Request, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC().Truncate(time.Second)
	return &u
}

const dash = "—"

// cell shows t as text(t - now), or a dash for the zero time.
func cell(now, t time.Time, text func(time.Duration) string) timeCell {
	if t.IsZero() {
		return timeCell{Text: dash}
	}
	return timeCell{Text: text(t.Sub(now)), ISO: t.UTC().Format(time.RFC3339)}
}

func expiresIn(d time.Duration) string {
	if d > 0 {
		return human(d)
	}
	return "expired " + human(-d) + " ago"
}

func refreshIn(d time.Duration) string {
	if d >= time.Second {
		return "in " + human(d)
	}
	return "now"
}

// human renders d to the second, at most two units: "1h 05m", "4m 09s",
// "12s", "3d 04h".
func human(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s >= 86400:
		return fmt.Sprintf("%dd %02dh", s/86400, s%86400/3600)
	case s >= 3600:
		return fmt.Sprintf("%dh %02dm", s/3600, s%3600/60)
	case s >= 60:
		return fmt.Sprintf("%dm %02ds", s/60, s%60)
	}
	return fmt.Sprintf("%ds", s)
}

var urlRE = regexp.MustCompile(`(?i)\bhttps?://[^\s"'<>]+`)

// cleanError makes an error fit for the page: URLs lose user info, query
// and fragment (which may carry an API key), control characters become
// spaces, and the text is cut at MaxErrorLen runes.
func cleanError(s string) string {
	if s == "" {
		return ""
	}
	s = urlRE.ReplaceAllStringFunc(s, upstream.RedactURL)
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > MaxErrorLen {
		s = string([]rune(s)[:MaxErrorLen-1]) + "…"
	}
	return s
}

// cleanHost keeps only a host[:port]; anything else shows nothing.
func cleanHost(h string) string {
	if h == "" || strings.ContainsAny(h, "/?#@ ") || len(h) > 255 {
		return ""
	}
	return h
}

// HostOf returns the host (and port) of a token URL, dropping scheme,
// user info, path and query; "" when it does not parse.
func HostOf(tokenURL string) string {
	u, err := url.Parse(tokenURL)
	if err != nil {
		return ""
	}
	return cleanHost(u.Host)
}
