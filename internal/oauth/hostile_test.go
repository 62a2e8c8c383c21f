package oauth_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/oauth"
)

// heapPeak samples the live heap every 5 ms until stop is called, and
// returns the peak above the heap at the start (after a GC).
func heapPeak() (stop func() uint64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > base && m.HeapAlloc-base > peak.Load() {
				peak.Store(m.HeapAlloc - base)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); <-finished; return peak.Load() }
}

// TestHugeBodyAndHeaders: a body over max_message_bytes is refused 413
// without being read whole, and the connection closed; headers over
// max_header_list_bytes get 431; neither costs the heap their size.
func TestHugeBodyAndHeaders(t *testing.T) {
	f := start(t, options{})
	stop := heapPeak()
	// 64 MiB of form, streamed: the server stops reading at 64 KiB.
	const prefix = "grant_type=client_credentials&client_id=team-a&scope="
	for _, chunked := range []bool{false, true} {
		body := io.MultiReader(strings.NewReader(prefix), &repeatReader{b: 'a', n: 64 << 20})
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.URL+oauth.Path, body)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if !chunked {
			req.ContentLength = int64(len(prefix)) + 64<<20
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// With a Content-Length: 413 after 64 KiB; chunked: 411 at once.
		want, text := 413, "larger than 65536 bytes"
		if chunked {
			want, text = 411, "not chunked"
		}
		if resp.StatusCode != want || !strings.Contains(string(msg), `"invalid_request"`) || !strings.Contains(string(msg), text) || !resp.Close {
			t.Errorf("64 MiB body (chunked %v): HTTP %d (closes: %v) %s", chunked, resp.StatusCode, resp.Close, msg)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.URL+oauth.Path, strings.NewReader(form("team-a", ciKey).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Junk", strings.Repeat("j", 1<<20))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("1 MiB of headers: HTTP %d, want 431", resp.StatusCode)
	}
	if peak := stop(); peak > 8<<20 {
		t.Errorf("heap grew by %d MiB while refusing 64 MiB of body and 1 MiB of headers", peak>>20)
	}
}

// repeatReader reads n bytes b.
type repeatReader struct {
	b byte
	n int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.n)
	for i := range n {
		p[i] = r.b
	}
	r.n -= n
	return n, nil
}

// TestSlowloris: a peer that sends its headers a byte at a time is cut
// off after handshake_timeout; a peer IP's connections past
// max_connections_per_ip are closed at once, and once it lets them go
// the IP is served again.
func TestSlowloris(t *testing.T) {
	f := start(t, options{limits: limits.Limits{HandshakeTimeout: 300 * time.Millisecond, MaxConnectionsPerIP: 4}})
	c, err := net.Dial("tcp", f.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		_, _ = io.Copy(io.Discard, c) // returns when the server closes
		closed <- time.Since(start)
	}()
	if _, err := io.WriteString(c, "POST /oauth2/token HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var took time.Duration
	for took == 0 {
		select {
		case took = <-closed:
		case <-tick.C:
			_, _ = c.Write([]byte("X"))
		case <-time.After(5 * time.Second):
			t.Fatal("a slow header sender still connected after 5 s")
		}
	}
	if took > 2*time.Second {
		t.Errorf("slow headers cut off after %s, want about handshake_timeout (300ms)", took)
	}

	// Four idle connections fill the IP's cap; a fifth is closed at once.
	var held []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", f.Addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	extra, err := net.Dial("tcp", f.Addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = extra.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("the 5th connection of one IP: read %v, want it closed at once", err)
	}
	extra.Close()
	for _, c := range held {
		c.Close()
	}
	// Once they are gone, requests are served again (the caps count
	// closed connections out).
	var a answer
	for i := 0; i < 50; i++ {
		if a = f.tryPost(form("team-a", ciKey)); a.Status == 200 {
			break
		}
		time.Sleep(20 * time.Millisecond) // the server notices closed connections on its own schedule
	}
	if a.Status != 200 {
		t.Errorf("after the held connections closed: HTTP %d", a.Status)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

// tryPost is post without failing on a transport error (status 0).
func (f *fixture) tryPost(v url.Values) answer {
	req, _ := http.NewRequestWithContext(f.t.Context(), http.MethodPost, f.URL+oauth.Path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return answer{}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return answer{Status: resp.StatusCode}
}

// TestWrongKeyFlood: 10,000 wrong keys from one IP cost what they cost
// on gRPC: the first refusals (the per-IP burst, 50, plus 10/s) are 401
// invalid_client, the rest 429; the audit trail collapses them, the log
// is rate limited, the heap stays bounded, and a right key from the same
// IP is still served.
func TestWrongKeyFlood(t *testing.T) {
	f := start(t, options{})
	const n, workers = 10000, 8
	stop := heapPeak()
	begin := time.Now()
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for i := range next {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, f.URL+oauth.Path,
					strings.NewReader(form("team-a", fmt.Sprintf("tbk_wrong_%06d", i)).Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := client.Do(req)
				code := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(begin)
	peak := stop()
	allowed := 50 + int(10*elapsed.Seconds()) + 1
	t.Logf("%d wrong keys in %s: %v; heap peak +%d KiB", n, elapsed.Round(time.Millisecond), statuses, peak>>10)
	if statuses[401] > allowed || statuses[401] < 50 || statuses[401]+statuses[429] != n {
		t.Errorf("statuses %v; want at most %d 401 (burst 50 + 10/s) and the rest 429", statuses, allowed)
	}
	if peak > 16<<20 {
		t.Errorf("heap grew by %d MiB during the flood, want < 16", peak>>20)
	}
	if a := f.post("", form("team-a", ciKey), nil); a.Status != 200 {
		t.Errorf("a right key from the flooding IP: HTTP %d %s", a.Status, a.Body)
	}
	var denials, counted int
	for _, r := range auditRecords(t, f) {
		if r.Event == audit.EventDeny {
			denials++
			counted += max(r.Count, 1)
		}
	}
	if denials > 200 {
		t.Errorf("%d audit lines for %d denials, want them collapsed", denials, n)
	}
	logLines := strings.Count(f.Logs.String(), `"msg":"oauth token request"`)
	if logLines > 200 {
		t.Errorf("%d request log lines for %d refusals, want them rate limited", logLines, n)
	}
	t.Logf("audit: %d deny lines standing for %d denials so far; request log: %d lines", denials, counted, logLines)
}

// TestConcurrentBigBodies: 16 clients (the IP's connection cap) posting
// bodies just under the limit (an unknown parameter, ignored), 50 times
// each, get their tokens and keep the heap bounded.
func TestConcurrentBigBodies(t *testing.T) {
	f := start(t, options{})
	body := form("team-a", ciKey, "padding", strings.Repeat("x", 60<<10)).Encode()
	stop := heapPeak()
	var wg sync.WaitGroup
	var bad atomic.Int32
	for range 16 {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for range 50 {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, f.URL+oauth.Path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := client.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				br := bufio.NewReader(resp.Body)
				_, _ = io.Copy(io.Discard, br)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	peak := stop()
	t.Logf("800 requests of 60 KiB from 16 connections: heap peak +%d KiB", peak>>10)
	if bad.Load() != 0 {
		t.Errorf("%d requests failed", bad.Load())
	}
	if peak > 16<<20 {
		t.Errorf("heap grew by %d MiB, want < 16 (16 bodies of 64 KiB in flight, a few copies each)", peak>>20)
	}
}
