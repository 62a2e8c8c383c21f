package clientlib_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/clientlib"
)

// BenchmarkSourceToken measures the cached path of Source.Token: no
// network, no allocation.
func BenchmarkSourceToken(b *testing.B) {
	s := startStack(b, stackConfig{})
	src := newSource(b, s)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := src.Token(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSourceTokenParallel is the cached path under contention.
func BenchmarkSourceTokenParallel(b *testing.B) {
	s := startStack(b, stackConfig{})
	src := newSource(b, s)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := src.Token(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// loopbackGETs starts the broker stack and a loopback HTTP server, and
// returns a Source, a base transport and get, which GETs the server
// through hc and reads the answer. Both Transport benchmarks run it, so
// that they differ only in the RoundTripper.
func loopbackGETs(b *testing.B) (src *clientlib.Source, base *http.Transport, get func(hc *http.Client)) {
	src = newSource(b, startStack(b, stackConfig{}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	b.Cleanup(srv.Close)
	base = &http.Transport{}
	b.Cleanup(base.CloseIdleConnections)
	get = func(hc *http.Client) {
		resp, err := hc.Get(srv.URL)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return src, base, get
}

// loopbackGET measures GET requests to a loopback server through the
// transport wrap builds.
func loopbackGET(b *testing.B, wrap func(src *clientlib.Source, base http.RoundTripper) http.RoundTripper) {
	src, base, get := loopbackGETs(b)
	hc := &http.Client{Transport: wrap(src, base)}
	b.ReportAllocs()
	for b.Loop() {
		get(hc)
	}
}

// BenchmarkTransport is a loopback GET through Transport; compare with
// BenchmarkBareTransport.
func BenchmarkTransport(b *testing.B) {
	loopbackGET(b, func(src *clientlib.Source, base http.RoundTripper) http.RoundTripper {
		return clientlib.NewTransport(src, clientlib.WithBaseTransport(base))
	})
}

// BenchmarkBareTransport is the same GET straight through the base
// transport, without any Authorization header.
func BenchmarkBareTransport(b *testing.B) {
	loopbackGET(b, func(_ *clientlib.Source, base http.RoundTripper) http.RoundTripper { return base })
}

// BenchmarkFixedHeaderTransport is the same GET with the same
// Authorization header, set by a minimal wrapper instead of by Transport:
// the baseline that separates Transport's own cost from the cost of
// sending a token at all.
func BenchmarkFixedHeaderTransport(b *testing.B) {
	loopbackGET(b, func(src *clientlib.Source, base http.RoundTripper) http.RoundTripper {
		tok, err := src.Token()
		if err != nil {
			b.Fatal(err)
		}
		return fixedHeader{base: base, value: []string{"Bearer " + tok.AccessToken}}
	})
}

// fixedHeader sets a fixed Authorization header on a shallow copy of each
// request: the least any authorising RoundTripper must do.
type fixedHeader struct {
	base  http.RoundTripper
	value []string
}

func (f fixedHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r2 := *r
	r2.Header = r.Header.Clone()
	if r2.Header == nil {
		r2.Header = http.Header{}
	}
	r2.Header["Authorization"] = f.value
	return f.base.RoundTrip(&r2)
}

// nopBase answers every request at once without a network.
type nopBase struct{ resp http.Response }

func (n *nopBase) RoundTrip(r *http.Request) (*http.Response, error) { return &n.resp, nil }

// roundTripOnly measures a RoundTripper over nopBase: its own cost,
// without the network noise of the loopback benchmarks.
func roundTripOnly(b *testing.B, wrap func(src *clientlib.Source, base http.RoundTripper) http.RoundTripper) {
	s := startStack(b, stackConfig{})
	src := newSource(b, s)
	rt := wrap(src, &nopBase{resp: http.Response{StatusCode: 200, Body: http.NoBody}})
	req, _ := http.NewRequest("GET", "https://api.example.com/v1/inputs", nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rt.RoundTrip(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransportRoundTripOnly is Transport's own cost per request.
func BenchmarkTransportRoundTripOnly(b *testing.B) {
	roundTripOnly(b, func(src *clientlib.Source, base http.RoundTripper) http.RoundTripper {
		return clientlib.NewTransport(src, clientlib.WithBaseTransport(base))
	})
}

// BenchmarkFixedHeaderRoundTripOnly is the minimal wrapper's cost.
func BenchmarkFixedHeaderRoundTripOnly(b *testing.B) {
	roundTripOnly(b, func(src *clientlib.Source, base http.RoundTripper) http.RoundTripper {
		tok, _ := src.Token()
		return fixedHeader{base: base, value: []string{"Bearer " + tok.AccessToken}}
	})
}

// BenchmarkReuseTokenSource is x/oauth2's cached path, the baseline of
// BenchmarkSourceToken (target: Source at most half of it).
func BenchmarkReuseTokenSource(b *testing.B) {
	ts := oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t", Expiry: time.Now().Add(time.Hour)}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ts.Token(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReuseTokenSourceParallel is the baseline of
// BenchmarkSourceTokenParallel.
func BenchmarkReuseTokenSourceParallel(b *testing.B) {
	ts := oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t", Expiry: time.Now().Add(time.Hour)}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ts.Token(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSourceTokenVsReuse interleaves batches of Source.Token and of
// x/oauth2's ReuseTokenSource.Token, so that a shared machine's load
// falls on both alike, and reports each one's ns per call and their
// ratio (target: at most 0.5).
func BenchmarkSourceTokenVsReuse(b *testing.B) {
	s := startStack(b, stackConfig{})
	src := newSource(b, s)
	reuse := oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t", Expiry: time.Now().Add(time.Hour)}))
	const batch = 1000
	var inSource, inReuse time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		for range batch {
			if _, err := src.Token(); err != nil {
				b.Fatal(err)
			}
		}
		mid := time.Now()
		for range batch {
			if _, err := reuse.Token(); err != nil {
				b.Fatal(err)
			}
		}
		inSource += mid.Sub(start)
		inReuse += time.Since(mid)
	}
	calls := float64(b.N) * batch
	b.ReportMetric(float64(inSource.Nanoseconds())/calls, "source-ns/call")
	b.ReportMetric(float64(inReuse.Nanoseconds())/calls, "reuse-ns/call")
	b.ReportMetric(float64(inSource)/float64(inReuse), "ratio")
}

// BenchmarkTransportVsBare alternates loopback GETs through
// Transport and straight through its base transport, and reports their
// ratio (target: at most 1.05).
func BenchmarkTransportVsBare(b *testing.B) {
	src, base, get := loopbackGETs(b)
	withToken := &http.Client{Transport: clientlib.NewTransport(src, clientlib.WithBaseTransport(base))}
	bare := &http.Client{Transport: base}
	// Alternate request by request: the machine's load changes at a
	// millisecond scale, which would swamp a difference of microseconds.
	// The order swaps every time, so that neither gains from going second.
	var inTransport, inBare time.Duration
	timed := func(hc *http.Client) time.Duration {
		start := time.Now()
		get(hc)
		return time.Since(start)
	}
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			inTransport += timed(withToken)
			inBare += timed(bare)
		} else {
			inBare += timed(bare)
			inTransport += timed(withToken)
		}
	}
	b.ReportMetric(float64(inTransport.Nanoseconds())/float64(b.N), "transport-ns/get")
	b.ReportMetric(float64(inBare.Nanoseconds())/float64(b.N), "bare-ns/get")
	b.ReportMetric(float64(inTransport)/float64(inBare), "ratio")
}
