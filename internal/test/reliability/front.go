package reliability

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// Mode is a fault the Front injects. ModePass forwards every request to
// the identity provider unchanged.
type Mode string

// The fault modes of the matrix.
const (
	ModePass          Mode = "pass"
	Mode500           Mode = "500"
	Mode503           Mode = "503"
	Mode429           Mode = "429 Retry-After"
	ModeHang          Mode = "hang"
	ModeReset         Mode = "connection reset"
	ModeGarbage       Mode = "garbage body"
	ModeHTML          Mode = "HTML body"
	ModeNoToken       Mode = "200 without access_token"
	ModeHugeExpiry    Mode = "expires_in huge"
	ModeZeroExpiry    Mode = "expires_in zero"
	ModeNegExpiry     Mode = "expires_in negative"
	ModeInvalidClient Mode = "invalid_client"
	ModeSlow          Mode = "slow"
	ModeBadTLS        Mode = "TLS wrong CA"
	ModeRedirect      Mode = "redirect"
)

// FaultModes lists every mode but ModePass.
var FaultModes = []Mode{
	Mode500, Mode503, Mode429, ModeHang, ModeReset, ModeGarbage, ModeHTML, ModeNoToken,
	ModeHugeExpiry, ModeZeroExpiry, ModeNegExpiry, ModeInvalidClient, ModeSlow, ModeBadTLS, ModeRedirect,
}

// HugeExpiresIn is the expires_in of ModeHugeExpiry: ten years.
const HugeExpiresIn = 10 * 365 * 24 * 3600

// Front is an HTTPS reverse proxy on loopback in front of a real identity
// provider that injects one fault at a time, switched with SetMode. Its
// certificate is issued by a CA of its own (Pool); in ModeBadTLS it
// presents one from another CA, which a client trusting Pool refuses.
//
// A Front is safe for concurrent use and must be closed.
type Front struct {
	srv     *httptest.Server
	proxy   *httputil.ReverseProxy
	pool    *x509.CertPool
	good    tls.Certificate
	bad     tls.Certificate
	closing chan struct{}
	once    sync.Once

	mode       atomic.Value // Mode
	retryAfter atomic.Int64 // seconds, for Mode429
	slow       atomic.Int64 // time.Duration, for ModeSlow
	requests   atomic.Int64
}

// StartFront starts a Front forwarding to upstream, an http(s) base URL.
func StartFront(t testing.TB, upstream string) *Front {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	goodCA, badCA := testpki.NewCA(t, "idp front CA"), testpki.NewCA(t, "untrusted CA")
	f := &Front{
		pool:    goodCA.Pool(),
		good:    goodCA.Server(t).TLSCertificate(t),
		bad:     badCA.Server(t).TLSCertificate(t),
		closing: make(chan struct{}),
	}
	f.mode.Store(ModePass)
	f.retryAfter.Store(2)
	f.slow.Store(int64(200 * time.Millisecond))
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		ModifyResponse: f.modifyResponse,
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	badConfig := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{f.bad}}
	f.srv.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{f.good},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if f.Mode() == ModeBadTLS {
				f.requests.Add(1) // the handshake is the whole attempt
				return badConfig, nil
			}
			return nil, nil
		},
	}
	// The refused handshakes of ModeBadTLS are expected.
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	f.srv.StartTLS()
	t.Cleanup(f.Close)
	return f
}

// TokenURL is the front's token endpoint (any path is forwarded as is).
func (f *Front) TokenURL() string { return f.srv.URL + "/v1/auth/oauth/token" }

// Pool holds the CA that issued the front's good certificate.
func (f *Front) Pool() *x509.CertPool { return f.pool }

// Mode returns the current mode.
func (f *Front) Mode() Mode { return f.mode.Load().(Mode) }

// SetMode switches the fault. Switching to ModeBadTLS closes open
// connections, so that the next request needs a new handshake. Requests
// that already hang keep hanging until their client gives up.
func (f *Front) SetMode(m Mode) {
	f.mode.Store(m)
	if m == ModeBadTLS {
		f.srv.CloseClientConnections()
	}
}

// SetRetryAfter sets Mode429's Retry-After in whole seconds.
func (f *Front) SetRetryAfter(d time.Duration) { f.retryAfter.Store(int64(d / time.Second)) }

// SetSlowDelay sets how long ModeSlow waits before forwarding.
func (f *Front) SetSlowDelay(d time.Duration) { f.slow.Store(int64(d)) }

// Requests is the number of token requests (or, in ModeBadTLS, TLS
// handshakes) received so far.
func (f *Front) Requests() int64 { return f.requests.Load() }

// Close releases hung requests and stops the front. It is idempotent.
func (f *Front) Close() {
	f.once.Do(func() {
		close(f.closing)
		f.srv.Close()
	})
}

func (f *Front) serve(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	// Read the whole body first: only then does net/http watch the
	// connection and cancel r.Context() when the client hangs up, which
	// ends a hung request. The proxy modes get it back.
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	switch m := f.Mode(); m {
	case Mode500:
		jsonError(w, http.StatusInternalServerError, `{"error":"server_error"}`)
	case Mode503:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "upstream connect error or disconnect/reset before headers\n")
	case Mode429:
		w.Header().Set("Retry-After", strconv.FormatInt(f.retryAfter.Load(), 10))
		jsonError(w, http.StatusTooManyRequests, `{"error":"slow_down"}`)
	case ModeHang:
		select {
		case <-r.Context().Done():
		case <-f.closing:
		}
		panic(http.ErrAbortHandler) // drop the connection unanswered
	case ModeReset:
		reset(w)
	case ModeGarbage:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"ey`+"\x00\xff garbage")
	case ModeHTML:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, "<!doctype html><html><body><h1>Sign in</h1><form>…</form></body></html>")
	case ModeNoToken:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"token_type":"Bearer","expires_in":3600}`)
	case ModeRedirect:
		http.Redirect(w, r, "https://"+r.Host+"/elsewhere/token", http.StatusTemporaryRedirect)
	case ModeInvalidClient:
		// The real IdP's own answer to a wrong secret.
		wrongSecret(r)
		f.proxy.ServeHTTP(w, r)
	case ModeSlow:
		t := time.NewTimer(time.Duration(f.slow.Load()))
		defer t.Stop()
		select {
		case <-t.C:
			f.proxy.ServeHTTP(w, r)
		case <-r.Context().Done():
		case <-f.closing:
			panic(http.ErrAbortHandler)
		}
	default: // pass, expiry rewrites (ModifyResponse); bad TLS never gets here
		f.proxy.ServeHTTP(w, r)
	}
}

// modifyResponse rewrites expires_in of a successful answer in the
// expiry modes.
func (f *Front) modifyResponse(resp *http.Response) error {
	var v int64
	switch f.Mode() {
	case ModeHugeExpiry:
		v = HugeExpiresIn
	case ModeZeroExpiry:
		v = 0
	case ModeNegExpiry:
		v = -3600
	default:
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	m["expires_in"] = v
	body, err = json.Marshal(m)
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// wrongSecret replaces the client secret of a client_secret_post or
// client_secret_basic request by a wrong one.
func wrongSecret(r *http.Request) {
	if id, _, ok := r.BasicAuth(); ok {
		r.SetBasicAuth(id, "wrong-secret")
	}
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, _ := url.ParseQuery(string(raw))
	if form.Has("client_secret") {
		form.Set("client_secret", "wrong-secret")
	}
	enc := form.Encode()
	r.Body = io.NopCloser(bytes.NewReader([]byte(enc)))
	r.ContentLength = int64(len(enc))
}

// reset drops the connection with a TCP RST instead of an answer.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0) // close sends RST
	}
	_ = conn.Close()
}

func jsonError(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}
