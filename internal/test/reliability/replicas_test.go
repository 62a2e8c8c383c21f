package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/local"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/clientlib"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// replica is one broker process.
type replica struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	token  string // the access token it serves
}

// buildBroker builds the broker binary into dir.
func buildBroker(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "broker")
	out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/tokenbroker/tokenbroker/cmd/broker").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startReplica writes a config file for one tenant and starts the broker
// on a free loopback port.
func startReplica(t *testing.T, bin, dir string, i int, idp *devidp.Server, client devidp.Client) *replica {
	t.Helper()
	secret := filepath.Join(dir, fmt.Sprintf("acme-%d.secret", i))
	if err := os.WriteFile(secret, []byte(client.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, fmt.Sprintf("broker-%d.yaml", i))
	yaml := fmt.Sprintf("listen: 127.0.0.1:0\nadmin:\n  listen: \"\"\nshutdown:\n  drain: 0s\ntenants:\n  - name: acme\n    token_url: %s\n    client_id: %s\n    client_secret_file: %s\n",
		idp.TokenURL(), client.ID, secret)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfg, "--log-format", "json")
	cmd.Stdout = io.Discard // the audit trail
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &replica{cmd: cmd, exited: make(chan struct{})}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-r.exited
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				addr <- line.Addr
			}
		}
		_ = cmd.Wait() // after the pipe is drained
		close(r.exited)
	}()
	select {
	case r.addr = <-addr:
	case <-r.exited:
		t.Fatalf("broker %d exited before listening", i)
	case <-time.After(10 * time.Second):
		t.Fatalf("broker %d did not listen within 10s", i)
	}
	return r
}

// fetchToken asks one replica directly for its token.
func (r *replica) fetchToken(t *testing.T) {
	t.Helper()
	conn, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := tbv1.NewTokenBrokerServiceClient(conn).GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatalf("replica %s: %v", r.addr, err)
	}
	r.token = resp.GetToken().GetAccessToken()
}

// resourceServer accepts bearer tokens issued by the dev IdP to client,
// checked by their claims (the IdP's signing key is private to it), and
// refuses revoked ones with 401.
type resourceServer struct {
	*httptest.Server
	revoked sync.Map // sha256 -> true
	served  atomic.Int64
	refused atomic.Int64
}

func startResourceServer(t *testing.T, idp *devidp.Server, client devidp.Client) *resourceServer {
	rs := &resourceServer{}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var c jwt.RegisteredClaims
		_, _, err := jwt.NewParser().ParseUnverified(tok, &c)
		_, revoked := rs.revoked.Load(broker.Fingerprint(tok))
		if !ok || err != nil || c.Issuer != idp.URL() || c.Subject != client.ID ||
			c.ExpiresAt == nil || !c.ExpiresAt.After(time.Now()) || revoked {
			rs.refused.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		rs.served.Add(1)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(rs.Close)
	return rs
}

// TestReplicaFailover runs three broker processes against one dev IdP
// behind one clientlib target, sends steady HTTP traffic through a
// clientlib HTTP client, SIGKILLs the replica that serves the client's
// watch and then SIGTERMs the next one. At each loss the replica's token
// is also revoked at the resource server, so that the client must reach a
// surviving replica (InvalidateToken) during the failover. No request may
// fail; the failover times are logged.
func TestReplicaFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the broker binary")
	}
	dir := t.TempDir()
	bin := buildBroker(t, dir)
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()

	replicas := make([]*replica, 3)
	for i := range replicas {
		replicas[i] = startReplica(t, bin, dir, i, idp, client)
	}
	addrs := make([]resolver.Address, len(replicas))
	for i, r := range replicas {
		r.fetchToken(t)
		addrs[i] = resolver.Address{Addr: r.addr}
	}
	serving := func(tok string) int {
		for i, r := range replicas {
			if r.token == tok {
				return i
			}
		}
		return -1
	}

	// One target for the three: a manual resolver, registered under a
	// scheme of its own (clientlib keeps targets whose scheme it knows).
	res := manual.NewBuilderWithScheme("reliability-replicas")
	res.InitialState(resolver.State{Addresses: addrs})
	resolver.Register(res)
	rs := startResourceServer(t, idp, client)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	hc, err := clientlib.NewHTTPClient(ctx,
		clientlib.WithBroker("reliability-replicas:///brokers", "acme"),
		clientlib.WithGRPCDialOptions(grpc.WithTransportCredentials(local.NewCredentials())),
		clientlib.WithReconnectBackoff(50*time.Millisecond, time.Second),
		clientlib.WithRPCTimeout(5*time.Second),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	web := hc.Client()
	current := func() int {
		tok, err := hc.Source().Token()
		if err != nil {
			return -1
		}
		return serving(tok.AccessToken)
	}

	// Steady traffic: 50 requests a second until stopped.
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var traffic sync.WaitGroup
	traffic.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			traffic.Go(func() {
				sent.Add(1)
				resp, err := web.Get(rs.URL + "/v1/projects")
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Errorf("request: HTTP %d", resp.StatusCode)
				}
			})
		}
	})
	steady := time.NewTimer(time.Second)
	<-steady.C

	// failover takes down the replica whose token the client holds and
	// waits until the client holds a surviving replica's token.
	down := map[int]bool{}
	failover := func(sig syscall.Signal) time.Duration {
		t.Helper()
		victim := current()
		if victim < 0 {
			t.Fatalf("the client holds a token of no replica")
		}
		down[victim] = true
		rs.revoked.Store(broker.Fingerprint(replicas[victim].token), true)
		start := time.Now()
		if err := replicas[victim].cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if i := current(); i >= 0 && !down[i] {
				took := time.Since(start)
				t.Logf("%s of replica %d (%s): the client holds replica %d's token after %s", sig, victim, replicas[victim].addr, i, took)
				return took
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s of replica %d: no failover within 10s", sig, victim)
			}
			time.Sleep(5 * time.Millisecond) // polling the client's state; nothing to wait on
		}
	}
	// settled waits 2 s after a failover and checks that traffic went on
	// through it (the ticker drops ticks on a loaded machine, so no rate).
	settled := func(what string) {
		before := sent.Load()
		settle := time.NewTimer(2 * time.Second)
		<-settle.C
		if sent.Load() == before {
			t.Errorf("no request was sent in the 2 s after the %s failover", what)
		}
	}
	killed := failover(syscall.SIGKILL)
	settled("SIGKILL")
	termed := failover(syscall.SIGTERM)
	settled("SIGTERM")
	close(stop)
	traffic.Wait()

	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed; want 0", failed.Load(), sent.Load())
	}
	for i, r := range replicas {
		if !down[i] {
			continue
		}
		select {
		case <-r.exited:
		case <-time.After(15 * time.Second):
			t.Errorf("replica %d did not exit after its signal", i)
		}
	}
	t.Logf("failover: SIGKILL %s, SIGTERM %s; %d requests sent, %d failed, %d refused once (revoked token) and retried",
		killed.Round(time.Millisecond), termed.Round(time.Millisecond), sent.Load(), failed.Load(), rs.refused.Load())
}
