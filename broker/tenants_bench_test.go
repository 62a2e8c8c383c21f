package broker_test

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
)

var tenantsIdPLatency = flag.Duration("tenants.idplatency", 0, "BenchmarkTenantsIdle: the token endpoint's latency")

var tenantsPerHost = flag.Int("tenants.perhost", 0, "BenchmarkTenantsIdle: Limits.MaxIdPRequestsPerHost (0: the default)")

var tenantsHeapProfile = flag.String("tenants.heapprofile", "",
	"BenchmarkTenantsIdle: write a heap profile here while the last broker's tenants are all READY and idle")

// BenchmarkTenantsIdle starts a broker with n tenants of one loopback token
// endpoint, waits until every default token is READY, and reports what an
// idle tenant costs: live heap (HeapAlloc) and in-use heap plus stacks
// (HeapInuse+StackInuse) per tenant over the process before the broker,
// after a forced GC. ns/op is the time from New to all READY. The token
// endpoint answers after -tenants.idplatency (default at once).
//
//	go test -run '^$' -bench TenantsIdle/10000 -benchtime 1x -memprofilerate 512 ./broker/ \
//	    -tenants.heapprofile /tmp/heap.out
//	go tool pprof -sample_index=inuse_space -top /tmp/heap.out
func BenchmarkTenantsIdle(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchTenantsIdle(b, n) })
	}
}

func benchTenantsIdle(b *testing.B, n int) {
	var issued atomic.Int64
	// A minimal token endpoint: each answer a distinct token of a realistic
	// JWT's length (a real IdP would hold state of its own, which must not
	// count here).
	pad := strings.Repeat("x", 200)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(*tenantsIdPLatency)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"eyJ.%d.%s","token_type":"Bearer","expires_in":3600}`, issued.Add(1), pad)
	}))
	defer idp.Close()
	specs := make([]broker.Tenant, n)
	for i := range specs {
		specs[i] = broker.Tenant{Name: fmt.Sprintf("t%d", i), TokenURL: idp.URL + "/token",
			ClientID: fmt.Sprintf("client-%d", i), ClientSecret: creds.Secret(fmt.Sprintf("secret-%d", i))}
	}
	var live, inuse float64
	for i := 0; i < b.N; i++ {
		var ready atomic.Int64
		all := make(chan struct{})
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		br, err := broker.New(broker.Config{Tenants: specs, Limits: limits.Limits{MaxIdPRequestsPerHost: *tenantsPerHost}, OnTenantHealth: func(_ string, serving bool) {
			if serving && ready.Add(1) == int64(n) {
				close(all)
			}
		}})
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-all:
		case <-time.After(2 * time.Minute):
			br.Close()
			b.Fatalf("%d of %d tenants READY after 2 minutes", ready.Load(), n)
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		live += float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
		inuse += float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / float64(n)
		if i == b.N-1 && *tenantsHeapProfile != "" {
			writeHeapProfile(b, *tenantsHeapProfile)
		}
		br.Close()
		b.StartTimer()
	}
	b.ReportMetric(live/float64(b.N), "live-B/tenant")
	b.ReportMetric(inuse/float64(b.N), "inuse-B/tenant")
	runtime.KeepAlive(specs)
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}
