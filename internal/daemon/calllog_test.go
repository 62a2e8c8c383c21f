package daemon_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// callLines returns the request log's lines ("finished call") of method.
func callLines(t *testing.T, logs, method string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for ln := range strings.Lines(logs) {
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("log line %q: %v", ln, err)
		}
		if m["msg"] == "finished call" && m["grpc.method"] == method {
			out = append(out, m)
		}
	}
	return out
}

// TestRequestLog: at info the request log has no line for a successful
// cache hit, one line for a refused call and for a slow call, each with
// method, code, duration, caller and tenant and nothing of the payload;
// at debug every call has its line.
func TestRequestLog(t *testing.T) {
	var level slog.LevelVar // info
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: &level}))
	s := brokertest.StartSecuredWith(t, daemon.Options{Logger: log})
	slowIdP := faultidp.Start()
	defer slowIdP.Close()
	slow := faultidp.OK("slow-token-value", 3600)
	slow.Delay = 1100 * time.Millisecond
	slowIdP.Push(slow)

	billing := s.API(s.WithCert(brokertest.BillingSPIFFE))
	if _, err := s.Get(t.Context(), billing, "acme"); err != nil { // a cache hit
		t.Fatal(err)
	}
	_, err := s.Get(t.Context(), billing, "hidden")
	brokertest.WantStatus(t, "billing asks for hidden", err, codes.PermissionDenied)
	// team-slow's first token takes 1.1 s; ci's call waits for it. ci's
	// connection is made first: on a loaded machine its handshake could
	// otherwise outlast the slow fetch and find the token cached.
	ci := s.API(s.TLSOnly())
	if _, err := ci.ListTenants(brokertest.Bearer(t.Context(), s.APIKey), &tbv1.ListTenantsRequest{}); err != nil {
		t.Fatal(err)
	}
	s.WriteConfig(strings.Replace(fmt.Sprintf(brokertest.SecuredConfig, s.IdP.TokenURL(), s.Client.ID, brokertest.SHA256Hex(s.APIKey)),
		"callers:", "  - name: team-slow\n    token_url: "+slowIdP.TokenURL()+"\n    client_id: slow-client\n    client_secret_file: idp.secret\ncallers:", 1))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(brokertest.Bearer(t.Context(), s.APIKey), ci, "team-slow"); err != nil {
		t.Fatal(err)
	}

	lines := callLines(t, logs.String(), "GetToken")
	if len(lines) != 2 {
		t.Fatalf("%d GetToken lines at info, want 2 (the denial and the slow call):\n%s", len(lines), logs)
	}
	want := []struct {
		level, code, caller, tenant string
		slow                        bool
	}{
		{"WARN", "PermissionDenied", "billing", "hidden", false},
		{"INFO", "OK", "ci", "team-slow", true},
	}
	for i, w := range want {
		l := lines[i]
		if l["level"] != w.level || l["grpc.code"] != w.code || l["caller"] != w.caller || l["tenant"] != w.tenant || (l["slow"] == true) != w.slow {
			t.Errorf("line %d = %v, want level %s code %s caller %s tenant %s slow %v", i, l, w.level, w.code, w.caller, w.tenant, w.slow)
		}
		if ms, ok := l["grpc.time_ms"].(float64); !ok || (w.slow && ms < 1000) {
			t.Errorf("line %d duration %v, want milliseconds (>= 1000 for the slow call)", i, l["grpc.time_ms"])
		}
	}

	level.Set(slog.LevelDebug)
	if _, err := s.Get(t.Context(), billing, "acme"); err != nil {
		t.Fatal(err)
	}
	lines = callLines(t, logs.String(), "GetToken")
	if n := len(lines); n != 3 || lines[2]["level"] != "DEBUG" || lines[2]["grpc.code"] != "OK" || lines[2]["caller"] != "billing" {
		t.Errorf("at debug: %d lines, last %v; want a third line, DEBUG OK by billing", n, lines[n-1])
	}

	tokens, _ := s.Seen()
	needles := map[string]string{"API key": s.APIKey, "client secret": s.Client.Secret, "slow token": "slow-token-value"}
	for i, tok := range tokens {
		needles[fmt.Sprintf("token %d", i)] = tok
	}
	logtest.AssertNone(t, map[string]string{"logs": logs.String()}, needles)
}
