package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// apiKey is the bench caller's key; only its SHA-256 goes into the config.
const apiKey = "tbload-bench-api-key-0123456789abcdef"

// buildBroker builds ../cmd/broker (the module this one replaces) into dir.
func buildBroker(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/tokenbroker/tokenbroker").Output()
	if err != nil {
		return "", fmt.Errorf("locate the broker module: %w", err)
	}
	bin := filepath.Join(dir, "broker")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/broker")
	cmd.Dir = strings.TrimSpace(string(out))
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/broker: %w", err)
	}
	return bin, nil
}

// brokerSpec is what a generated config holds.
type brokerSpec struct {
	deployed bool // one API-key caller; otherwise open mode (no callers)
	tenants  int
	// tenantsDir lays the tenants out as one file each in a tenants_dir.
	tenantsDir bool
	tokenURL   string
	// streamsPerConn is limits.max_streams_per_connection.
	streamsPerConn int
	// pprof turns on admin.pprof, for -profile.
	pprof bool
}

type brokerProc struct {
	cmd    *exec.Cmd
	addr   string
	admin  string // admin listener host:port
	dir    string
	stderr *os.File
	start  time.Time
	// serving is when health "" first answered SERVING.
	serving time.Time
	keep    bool // leave dir for a post-mortem
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func writeConfig(dir, addr, admin string, s brokerSpec) (string, error) {
	secret := filepath.Join(dir, "s")
	if err := os.WriteFile(secret, []byte("bench-client-secret\n"), 0o600); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nadmin:\n  listen: %s\n  pprof: %t\nwatch:\n  enabled: false\naudit:\n  path: %s\n", addr, admin, s.pprof, filepath.Join(dir, "audit.log"))
	if s.deployed {
		sum := sha256.Sum256([]byte(apiKey))
		fmt.Fprintf(&b, "callers:\n  - name: bench\n    api_key_sha256: %s\n    tenants: [\"*\"]\n", hex.EncodeToString(sum[:]))
	}
	spc := max(s.streamsPerConn, 100)
	// Limits out of the way: the bench measures the broker, not its
	// rate limiter.
	fmt.Fprintf(&b, `limits:
  requests_per_second: 1000000
  burst: 1000000
  invalidations_per_second: 1000000
  invalidation_burst: 1000000
  max_streams_per_caller: 1000000
  max_streams_per_connection: %d
  max_connections: 1000000
  max_connections_per_ip: 1000000
  max_open_streams_per_ip: 1000000
  max_streams_per_ip: 1000000
  max_anonymous_streams_per_ip: 1000000
  max_streams_per_api_key: 1000000
  new_scope_sets_per_second: 1000000
  new_scope_set_burst: 1000000
`, spc)
	if s.tenantsDir {
		if err := writeTenantsDir(filepath.Join(dir, "tenants"), s); err != nil {
			return "", err
		}
		b.WriteString("tenants_dir: tenants\n")
	} else {
		b.WriteString("tenants:\n")
	}
	for i := range s.tenants {
		if !s.tenantsDir {
			// Flow style and a relative path: the config file is capped at 1 MiB.
			fmt.Fprintf(&b, "  - {name: t%d, token_url: %s, client_id: c%d, client_secret_file: s}\n", i, s.tokenURL, i)
		}
	}
	path := filepath.Join(dir, "broker.yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// writeTenantsDir writes tenant i to dir/t<i>.yaml, named by its file.
func writeTenantsDir(dir string, s brokerSpec) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	for i := range s.tenants {
		t := fmt.Sprintf("token_url: %s\nclient_id: c%d\nclient_secret_file: ../s\n", s.tokenURL, i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("t%d.yaml", i)), []byte(t), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// startBroker runs bin with a generated config and waits until health
// "" is SERVING.
func startBroker(ctx context.Context, bin string, s brokerSpec) (*brokerProc, error) {
	dir, err := os.MkdirTemp("", "tbload-")
	if err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	// The admin listener (metrics, pprof) on a port of its own: the
	// default 9464 clashes with any other broker on the machine.
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg, err := writeConfig(dir, addr, admin, s)
	if err != nil {
		return nil, err
	}
	errf, err := os.Create(filepath.Join(dir, "broker.stderr"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfg, "--log-level", "info")
	cmd.Stdout = errf
	cmd.Stderr = errf
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	p := &brokerProc{cmd: cmd, addr: addr, admin: admin, dir: dir, stderr: errf, start: time.Now()}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		p.stop()
		return nil, err
	}
	defer cc.Close()
	h := healthpb.NewHealthClient(cc)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			p.serving = time.Now()
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil || cmd.ProcessState != nil {
			p.keep = true
			p.stop()
			return nil, fmt.Errorf("broker did not become SERVING (last: %v); see %s", err, errf.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *brokerProc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	_ = p.stderr.Close()
	if !p.keep && os.Getenv("TBLOAD_KEEP") == "" {
		_ = os.RemoveAll(p.dir)
	}
}

// readyz reports whether the broker's admin /readyz answers 200.
func (p *brokerProc) readyz(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/readyz", nil)
	if err != nil {
		return false
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = r.Body.Close()
	return r.StatusCode == http.StatusOK
}

// rss is the broker's resident set size in bytes (Linux).
func (p *brokerProc) rss() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

var gcLine = regexp.MustCompile(`gc \d+ @[0-9.]+s .*: .* (\d+)->(\d+)->(\d+) MB`)

// liveHeap is the heap marked live by the broker's last GC (GODEBUG
// gctrace), in bytes; -1 if none ran yet.
func (p *brokerProc) liveHeap() int64 {
	b, err := os.ReadFile(p.stderr.Name())
	if err != nil {
		return -1
	}
	m := gcLine.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return -1
	}
	mb, _ := strconv.ParseInt(string(m[len(m)-1][3]), 10, 64)
	return mb << 20
}
