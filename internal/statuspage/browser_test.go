package statuspage_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tokenbroker/tokenbroker/internal/statuspage"
)

// chromiumPath is where the distribution's chromium package installs the
// browser (.ci/run installs it).
const chromiumPath = "/usr/bin/chromium"

// requireBrowser skips the test without Chromium, unless CI demands it.
func requireBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("TOKENBROKER_REQUIRE_BROWSER") == "1" {
			t.Fatalf("TOKENBROKER_REQUIRE_BROWSER=1 but Chromium is missing: %v; install it with apt-get install chromium", err)
		}
		t.Skipf("skipping the browser test: %s not found; install it with apt-get install chromium (CI sets TOKENBROKER_REQUIRE_BROWSER=1 to make this a failure)", chromiumPath)
	}
}

// artifactPath is where the test saves file: under $TOKENBROKER_ARTIFACTS
// when set, else in the test's temporary directory.
func artifactPath(t *testing.T, file string) string {
	t.Helper()
	dir := os.Getenv("TOKENBROKER_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, file)
}

// cspRecorder runs before the page's own code (DevTools-injected scripts
// are exempt from the page's CSP) and keeps every CSP violation.
const cspRecorder = `window.__csp = [];
document.addEventListener('securitypolicyviolation', e => {
  window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline'));
});`

// pageView is what a person sees, read from the rendered page.
type pageView struct {
	Summary string `json:"summary"`
	Body    string `json:"body"`
	Rows    []struct {
		Tenant string   `json:"tenant"`
		Cells  []string `json:"cells"`
	} `json:"rows"`
	ReadyBadge   string   `json:"readyBadge"`   // background colour
	FailingBadge string   `json:"failingBadge"` // background colour
	TimeFont     string   `json:"timeFont"`
	Violations   []string `json:"violations"`
}

const readView = `(() => {
  const style = sel => { const el = document.querySelector(sel); return el ? getComputedStyle(el) : null; };
  return {
    summary: document.querySelector('#summary').innerText,
    body: document.body.innerText,
    rows: [...document.querySelectorAll('#tenants tbody tr')].map(tr => ({
      tenant: tr.dataset.tenant || '',
      cells: [...tr.children].map(c => c.innerText.trim()),
    })),
    readyBadge: style('tr[data-state="ready"] .badge')?.backgroundColor ?? '',
    failingBadge: style('tr[data-state="failing"] .badge')?.backgroundColor ?? '',
    timeFont: style('td.expiry')?.fontFamily ?? '',
    violations: window.__csp,
  };
})()`

// TestStatusPageInBrowser loads the status page of a real broker, with one
// tenant READY against the dev IdP and one FAILING against an endpoint that
// answers 503, in headless Chromium; checks what a person sees, that the
// CSP blocked nothing and the stylesheet applied, and that the page reloads
// itself; and saves a screenshot.
func TestStatusPageInBrowser(t *testing.T) {
	requireBrowser(t)
	lb := startLiveBroker(t)

	h := statuspage.Handler(statuspage.FromBroker(lb.b), statuspage.WithVersion("v0.0.0-browsertest"))
	var loads atomic.Int32
	reloaded := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && loads.Add(1) == 2 {
			close(reloaded)
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 520),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	var mu sync.Mutex
	var console []string
	cspLogged := make(chan struct{}, 1)
	if err := chromedp.Listen(bctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *cdplog.EventEntryAdded:
			msg = fmt.Sprintf("%s %s: %s", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text)
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
		case *runtime.EventConsoleAPICalled:
			msg = "console." + string(ev.Type)
		default:
			return
		}
		mu.Lock()
		console = append(console, msg)
		mu.Unlock()
		if strings.Contains(msg, "Content Security Policy") {
			select {
			case cspLogged <- struct{}{}:
			default:
			}
		}
	}); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	consoleLines := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), console...)
	}

	if _, err := chromedp.Call(bctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder}); err != nil {
		t.Fatal(err)
	}
	// The colours asserted below are the light theme's.
	if _, err := chromedp.Call(bctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#tenants tbody tr")),
	); err != nil {
		t.Fatal(err)
	}
	// One read of the page, well within its 5 s reload.
	v, err := chromedp.Run(bctx, chromedp.Evaluate[pageView](readView))
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := artifactPath(t, "statuspage.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	before := consoleLines()
	select {
	case <-cspLogged:
		t.Errorf("CSP violation on load; console: %q", before)
	default:
	}

	// What a person sees.
	if !strings.Contains(v.Summary, "2 tenants") || !strings.Contains(v.Summary, "1 ready") || !strings.Contains(v.Summary, "1 failing") {
		t.Errorf("summary reads %q; want 2 tenants, 1 ready, 1 failing", v.Summary)
	}
	if len(v.Rows) != 2 || v.Rows[0].Tenant != "billing-eu" || v.Rows[1].Tenant != "payments" {
		t.Fatalf("rows: %+v; want billing-eu then payments", v.Rows)
	}
	// Columns: tenant (and host), state, expires in, next refresh, scope
	// sets, watches, last error.
	failing, ready := v.Rows[0].Cells, v.Rows[1].Cells
	if len(failing) != 7 || len(ready) != 7 {
		t.Fatalf("cells: %q / %q; want 7 each", failing, ready)
	}
	duration := regexp.MustCompile(`^\d+(h \d\dm|m \d\ds|s)$`)
	if !strings.HasPrefix(ready[0], "payments\n"+lb.idpHost) || ready[1] != "READY" || !duration.MatchString(ready[2]) ||
		!strings.HasPrefix(ready[3], "in ") || ready[4] != "1" || ready[5] != "0" || ready[6] != "—" {
		t.Errorf("payments row reads %q; want payments at %s, READY, a time to expiry, a next refresh, 1 scope set, 0 watches, no error", ready, lb.idpHost)
	}
	if !strings.HasPrefix(failing[0], "billing-eu\n127.0.0.1:") || failing[1] != "FAILING" || failing[2] != "—" ||
		!strings.Contains(failing[6], "HTTP 503") || !strings.Contains(failing[6], "/v1/auth/oauth/token") {
		t.Errorf("billing-eu row reads %q; want billing-eu, FAILING, no expiry, its HTTP 503 error", failing)
	}
	for what, secret := range lb.secrets {
		if strings.Contains(v.Body, secret) {
			t.Errorf("the page shows the %s", what)
		}
	}

	// The stylesheet loaded under the CSP and applied: badges carry their
	// state's colour, times are monospace.
	if v.ReadyBadge != "rgb(218, 251, 225)" || v.FailingBadge != "rgb(255, 235, 233)" {
		t.Errorf("badge backgrounds ready %q, failing %q; the stylesheet did not apply", v.ReadyBadge, v.FailingBadge)
	}
	if !strings.Contains(v.TimeFont, "monospace") {
		t.Errorf("time cells use font %q, want monospace", v.TimeFont)
	}
	if len(v.Violations) != 0 {
		t.Errorf("CSP violations: %q", v.Violations)
	}
	for _, line := range before {
		if strings.Contains(line, "Content Security Policy") || strings.HasPrefix(line, "exception") || strings.Contains(line, " error: ") {
			t.Errorf("browser console: %s", line)
		}
	}

	// The detectors above can fail: an inline style is a violation that
	// both the recorder and the console report.
	if err := chromedp.Do(bctx,
		chromedp.Evaluate[chromedp.Void](`document.head.appendChild(Object.assign(document.createElement('style'), {textContent: 'body{color:red}'}))`),
		chromedp.Poll[chromedp.Void](`window.__csp.length > 0`, chromedp.WithPollingTimeout(10*time.Second)),
	); err != nil {
		t.Fatalf("an inline style raised no CSP violation: %v", err)
	}
	select {
	case <-cspLogged:
	case <-ctx.Done():
		t.Fatalf("an inline style's CSP violation never reached the console; console: %q", consoleLines())
	}

	// The page reloads itself.
	select {
	case <-reloaded:
	case <-ctx.Done():
		t.Fatal("the page did not reload itself")
	}
}
