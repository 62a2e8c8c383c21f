package daemon_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// TestCallCapsFromConfig: limits.max_streams_per_caller reaches the
// guard (here: open mode, every loopback client is the one caller), and
// the three stream caps it replaced still parse but are ignored, each
// named in a warning with its replacement.
func TestCallCapsFromConfig(t *testing.T) {
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	dir := t.TempDir()
	testpki.WriteFile(t, filepath.Join(dir, "s"), []byte(client.Secret))
	cfg := filepath.Join(dir, "c.yaml")
	testpki.WriteFile(t, cfg, fmt.Appendf(nil, `listen: 127.0.0.1:0
tenants:
  - name: acme
    token_url: %s
    client_id: %s
    client_secret_file: s
limits:
  max_streams_per_caller: 1
  max_streams_per_ip: 64
  max_streams_per_api_key: 500
  max_open_streams_per_ip: 30
`, idp.TokenURL(), client.ID))
	logs := &logtest.Buffer{}
	d := runFile(t, cfg, logs, &logtest.Buffer{})
	for _, key := range []string{"max_streams_per_ip", "max_streams_per_api_key", "max_open_streams_per_ip"} {
		if !strings.Contains(logs.String(), "limits."+key+" is deprecated and ignored; open calls are capped per caller") {
			t.Errorf("no warning naming limits.%s and its replacement:\n%s", key, logs)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := api(t, d)
	w, err := c.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err == nil {
		_, err = w.Recv()
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "acme"}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a second call while the caller holds its one: %v, want RESOURCE_EXHAUSTED", err)
	}
}
