package audit

import (
	"io"
	"testing"
)

// The audit line of a cache hit: go test -run '^$' -bench . -benchmem ./internal/audit/
var benchIssue = Record{Event: EventIssue, Method: "/tokenbroker.v1.TokenBrokerService/GetToken", Caller: "bench",
	Identity: "api_key", Peer: "127.0.0.1:50312", Tenant: "acme", TokenFingerprint: "0123456789ab", Version: 3, Result: ResultOK}

func BenchmarkLog(b *testing.B) {
	l := New(io.Discard)
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Log(benchIssue); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLogScopes(b *testing.B) {
	l := New(io.Discard)
	r := benchIssue
	r.Scopes = []string{"read:inputs", "write:annotations"}
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Log(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLogParallel: 50 concurrent calls on 2 cores, as tbload -c 50.
func BenchmarkLogParallel(b *testing.B) {
	l := New(io.Discard)
	b.ReportAllocs()
	b.SetParallelism(25)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Log(benchIssue); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkLogDenialRepeated: a flood of one denial, counted, not written.
func BenchmarkLogDenialRepeated(b *testing.B) {
	l := New(io.Discard)
	r := Record{Method: "/tokenbroker.v1.TokenBrokerService/GetToken", Peer: "192.0.2.1:1000", Tenant: "acme",
		Result: ResultDenied, Code: "Unauthenticated", Reason: "API key not recognised"}
	b.ReportAllocs()
	for b.Loop() {
		if err := l.LogDenial(r); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = l.Close()
}

// BenchmarkEncode: a line's encoding alone.
func BenchmarkEncode(b *testing.B) {
	b.ReportAllocs()
	e := newEncoder()
	for b.Loop() {
		e.buf.Reset()
		_ = e.add(&benchIssue)
	}
}
