package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// idp is a minimal client-credentials token endpoint on loopback: it
// answers every well-formed request after a fixed latency with an HS256
// JWT, and counts requests per scope and the peak of concurrent requests.
// It checks nothing else; the broker's own tests cover IdP semantics.
type idp struct {
	latency  time.Duration
	lifetime time.Duration
	key      []byte
	srv      *http.Server
	addr     string

	inflight atomic.Int64
	peak     atomic.Int64
	total    atomic.Int64

	mu      sync.Mutex
	byScope map[string]int
	first   time.Time
	last    time.Time
}

func startIdP(latency, lifetime time.Duration) (*idp, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("idp: %w", err)
	}
	p := &idp{latency: latency, lifetime: lifetime, key: make([]byte, 32), byScope: map[string]int{}, addr: lis.Addr().String()}
	_, _ = rand.Read(p.key)
	p.srv = &http.Server{Handler: http.HandlerFunc(p.token), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(lis) }()
	return p, nil
}

func (p *idp) tokenURL() string { return "http://" + p.addr + "/t" }

func (p *idp) close() { _ = p.srv.Close() }

func (p *idp) token(w http.ResponseWriter, r *http.Request) {
	n := p.inflight.Add(1)
	defer p.inflight.Add(-1)
	for {
		pk := p.peak.Load()
		if n <= pk || p.peak.CompareAndSwap(pk, n) {
			break
		}
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	scope := r.PostForm.Get("scope")
	client := r.PostForm.Get("client_id")
	if client == "" {
		client, _, _ = r.BasicAuth()
	}
	p.total.Add(1)
	if p.latency > 0 {
		time.Sleep(p.latency)
	}
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": client, "scope": scope, "iat": now.Unix(), "exp": now.Add(p.lifetime).Unix(),
		"jti": fmt.Sprint(p.total.Load()),
	}).SignedString(p.key)
	if err != nil {
		http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
		return
	}
	p.mu.Lock()
	p.byScope[scope]++
	if p.first.IsZero() {
		p.first = now
	}
	p.last = now
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "token_type": "Bearer", "expires_in": int(p.lifetime / time.Second), "scope": scope,
	})
}

func (p *idp) requests(scope string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byScope[scope]
}

func (p *idp) window() (first, last time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first, p.last
}
