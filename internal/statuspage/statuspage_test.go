package statuspage_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/tokenbroker/tokenbroker/internal/statuspage"
)

var now = time.Date(2026, 11, 20, 14, 3, 12, 0, time.UTC)

func staticSource(ts ...statuspage.Tenant) statuspage.Source {
	return statuspage.SourceFunc(func() []statuspage.Tenant { return ts })
}

func sample() statuspage.Source {
	return staticSource(
		statuspage.Tenant{Name: "payments", State: "ready", Expiry: now.Add(time.Hour), NextRefresh: now.Add(30 * time.Minute),
			ScopeSets: 3, Watches: 2, Host: "idp.internal:8443"},
		statuspage.Tenant{Name: "billing-eu", State: "failing", NextRefresh: now.Add(4 * time.Second),
			LastError: "upstream: token request failed: HTTP 503", ScopeSets: 1, Watches: 0},
	)
}

func get(t *testing.T, h http.Handler, method, target string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	h := statuspage.Handler(sample())
	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/", 200, "text/html; charset=utf-8"},
		{"GET", "/status.json", 200, "application/json"},
		{"GET", "/static/status.css", 200, "text/css; charset=utf-8"},
		{"GET", "/nope", 404, ""},
		{"POST", "/", 405, ""},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			res, _ := get(t, h, tc.method, tc.path)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			want := map[string]string{
				"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"Cache-Control":           "no-store",
				"X-Frame-Options":         "DENY",
			}
			if tc.contentType != "" {
				want["Content-Type"] = tc.contentType
			}
			for k, v := range want {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestOnlyGetAndHead(t *testing.T) {
	h := statuspage.Handler(sample())
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		for _, p := range []string{"/", "/status.json", "/static/status.css"} {
			res, _ := get(t, h, m, p)
			if res.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: status %d, want 405", m, p, res.StatusCode)
			}
			if allow := res.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "HEAD") {
				t.Errorf("%s %s: Allow %q, want GET and HEAD", m, p, allow)
			}
		}
	}
	res, body := get(t, h, "HEAD", "/")
	if res.StatusCode != 200 || body != "" {
		t.Errorf("HEAD /: status %d, body %d bytes; want 200 and no body", res.StatusCode, len(body))
	}
}

func TestPageShowsEveryTenant(t *testing.T) {
	h := statuspage.Handler(sample(), statuspage.WithClock(clockwork.NewFakeClockAt(now)), statuspage.WithVersion("v1.4.2"))
	_, body := get(t, h, "GET", "/")
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		`<link rel="stylesheet" href="static/status.css">`,
		"v1.4.2",
		"2026-11-20 14:03:12 UTC",
		`2 tenants`,
		`<span class="n">1</span> ready`,
		`<span class="n">1</span> failing`,
		// payments: every column
		`<span class="badge state-ready">READY</span>`,
		`>1h 00m</time>`, `>in 30m 00s</time>`,
		`<td class="num scopesets">3</td>`, `<td class="num watches">2</td>`,
		`<span class="host">idp.internal:8443</span>`,
		// billing-eu: failing, with its error, no expiry
		`<span class="badge state-failing">FAILING</span>`,
		`<code>upstream: token request failed: HTTP 503</code>`,
		`<td class="num time expiry"><span class="none">—</span></td>`,
		`>in 4s</time>`,
		`<td class="num scopesets">1</td>`,
		`<td class="num watches">0</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	// Sorted by name.
	if strings.Index(body, `data-tenant="billing-eu"`) > strings.Index(body, `data-tenant="payments"`) {
		t.Error("tenants not sorted by name")
	}
	if strings.Contains(body, "<script") {
		t.Error("page contains a script element")
	}
}

func TestPageWithoutTenants(t *testing.T) {
	_, body := get(t, statuspage.Handler(staticSource()), "GET", "/")
	if !strings.Contains(body, "No tenants configured.") || !strings.Contains(body, "0 tenants") {
		t.Errorf("empty page does not say so:\n%s", body)
	}
}

func TestHostileErrorIsEscapedAndCapped(t *testing.T) {
	hostile := `<script>alert("x")</script><img src=x onerror=alert(1)> token endpoint https://user:pw@idp.test/token?api_key=k-123#frag said no ` +
		strings.Repeat("A", 2*statuspage.MaxErrorLen)
	h := statuspage.Handler(staticSource(statuspage.Tenant{
		Name: `evil"><script>alert(2)</script>`, State: `failing"><b>`, LastError: hostile,
		Host: "x/<script>", ScopeSets: 1, Watches: 0,
	}))
	_, body := get(t, h, "GET", "/")
	for _, bad := range []string{"<script", "<img", "<b>", "api_key", "k-123", "user:pw", "#frag"} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	for _, want := range []string{
		`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;`,
		"https://idp.test/token said no",
		"…</code>",
		`class="badge state-other"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if n := strings.Count(body, "A"); n > statuspage.MaxErrorLen {
		t.Errorf("error not capped: %d A's shown", n)
	}

	_, js := get(t, h, "GET", "/status.json")
	for _, bad := range []string{"<script", "api_key", "k-123", "user:pw"} {
		if strings.Contains(js, bad) {
			t.Errorf("status.json contains %q", bad)
		}
	}
}

func TestJSON(t *testing.T) {
	h := statuspage.Handler(sample(), statuspage.WithClock(clockwork.NewFakeClockAt(now)), statuspage.WithVersion("v1.4.2"))
	res, body := get(t, h, "GET", "/status.json")
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	var got struct {
		GeneratedAt time.Time      `json:"generated_at"`
		Version     string         `json:"version"`
		States      map[string]int `json:"states"`
		Tenants     []struct {
			Name             string     `json:"name"`
			State            string     `json:"state"`
			Host             string     `json:"host"`
			Expiry           *time.Time `json:"expiry"`
			ExpiresInSeconds *int64     `json:"expires_in_seconds"`
			NextRefresh      *time.Time `json:"next_refresh"`
			LastError        string     `json:"last_error"`
			ScopeSets        *int       `json:"scope_sets"`
			Watches          *int       `json:"watches"`
		} `json:"tenants"`
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode: %v\n%s", err, body)
	}
	if !got.GeneratedAt.Equal(now) || got.Version != "v1.4.2" || got.States["ready"] != 1 || got.States["failing"] != 1 {
		t.Errorf("header fields: %+v", got)
	}
	if len(got.Tenants) != 2 {
		t.Fatalf("%d tenants, want 2", len(got.Tenants))
	}
	b, p := got.Tenants[0], got.Tenants[1]
	if b.Name != "billing-eu" || b.State != "failing" || b.Expiry != nil || b.ExpiresInSeconds != nil ||
		*b.ScopeSets != 1 || *b.Watches != 0 || b.LastError != "upstream: token request failed: HTTP 503" {
		t.Errorf("billing-eu: %+v", b)
	}
	if p.Name != "payments" || p.State != "ready" || p.Host != "idp.internal:8443" || p.Expiry == nil ||
		!p.Expiry.Equal(now.Add(time.Hour)) || *p.ExpiresInSeconds != 3600 || !p.NextRefresh.Equal(now.Add(30*time.Minute)) ||
		*p.ScopeSets != 3 || *p.Watches != 2 {
		t.Errorf("payments: %+v", p)
	}
}

func TestHostOf(t *testing.T) {
	for in, want := range map[string]string{
		"https://idp.example.com/oauth/token?api_key=x": "idp.example.com",
		"https://user:pw@127.0.0.1:8443/token#f":        "127.0.0.1:8443",
		"http://[::1]:9000/t":                           "[::1]:9000",
		"::not a url":                                   "",
		"":                                              "",
	} {
		if got := statuspage.HostOf(in); got != want {
			t.Errorf("HostOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFromBrokerShowsNoSecret serves a real broker's tenants and checks the
// page and JSON show their states and the failing tenant's error, and none
// of the token, client ids, client secrets or token URL query.
func TestFromBrokerShowsNoSecret(t *testing.T) {
	lb := startLiveBroker(t)
	h := statuspage.Handler(statuspage.FromBroker(lb.b))
	_, page := get(t, h, "GET", "/")
	_, js := get(t, h, "GET", "/status.json")
	for what, secret := range lb.secrets {
		for name, body := range map[string]string{"page": page, "status.json": js} {
			if strings.Contains(body, secret) {
				t.Errorf("%s shows the %s", name, what)
			}
		}
	}
	for _, want := range []string{
		`data-tenant="payments" data-state="ready"`,
		`data-tenant="billing-eu" data-state="failing"`,
		`<span class="badge state-ready">READY</span>`,
		`<span class="badge state-failing">FAILING</span>`,
		"HTTP 503",
		`<span class="host">` + lb.idpHost + `</span>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if !strings.Contains(js, `"state": "failing"`) || !strings.Contains(js, `"state": "ready"`) {
		t.Errorf("status.json lacks the states:\n%s", js)
	}
}

func TestNilSourcePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Handler(nil) did not panic")
		}
	}()
	statuspage.Handler(nil)
}

// TestLastReload: a reload that did not succeed is a banner on the page
// (refused or failed, with its cleaned reason) and last_reload in
// status.json; a successful one is in status.json only; without
// WithReload there is neither.
func TestLastReload(t *testing.T) {
	at := now.Add(-time.Minute)
	for _, tc := range []struct {
		name       string
		reload     *statuspage.Reload
		banner     string // "" for none
		jsonResult string
	}{
		{"none", nil, "", ""},
		{"success", &statuspage.Reload{Result: "success", At: at}, "", "success"},
		{"rejected", &statuspage.Reload{Result: "rejected", At: at, Error: "daemon: reload refused: it removes every caller <b>"},
			"Configuration reload <strong>refused</strong> at <time datetime=\"2026-11-20T14:02:12Z\">2026-11-20 14:02:12 UTC</time>; the running configuration is kept (restart to apply such a change). <code>daemon: reload refused: it removes every caller &lt;b&gt;</code>", "rejected"},
		{"error", &statuspage.Reload{Result: "error", At: at, Error: "config: bad token_url https://idp/x?key=FAKE-query-key"},
			"Configuration reload <strong>failed</strong>", "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []statuspage.Option{statuspage.WithClock(clockwork.NewFakeClockAt(now))}
			if tc.reload != nil {
				r := *tc.reload
				opts = append(opts, statuspage.WithReload(func() statuspage.Reload { return r }))
			}
			h := statuspage.Handler(sample(), opts...)
			_, page := get(t, h, "GET", "/")
			if tc.banner == "" && strings.Contains(page, `id="reload"`) || tc.banner != "" && !strings.Contains(page, tc.banner) {
				t.Errorf("page banner, want %q:\n%s", tc.banner, page)
			}
			_, body := get(t, h, "GET", "/status.json")
			var st struct {
				LastReload *struct {
					Result, Error string
					At            time.Time
				} `json:"last_reload"`
			}
			if err := json.Unmarshal([]byte(body), &st); err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.jsonResult == "" && st.LastReload != nil, tc.jsonResult != "" && (st.LastReload == nil || st.LastReload.Result != tc.jsonResult || !st.LastReload.At.Equal(at)):
				t.Errorf("last_reload %+v, want result %q", st.LastReload, tc.jsonResult)
			}
			if strings.Contains(page+body, "FAKE-query-key") {
				t.Error("a URL query reached the page")
			}
		})
	}
}
