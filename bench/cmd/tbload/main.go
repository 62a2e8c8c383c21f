// Command tbload is tokenbroker's load harness. It builds the broker from
// this repository, runs it as a separate process on loopback with a
// generated config against a tiny in-process identity provider, and prints
// ratios for the targets of the performance issue:
//
//	hit       GetToken cache hit and the broker's own grpc.health.v1.Health/
//	          Check against the bare floor (grpc-go with no interceptors
//	          serving Check, a process of its own), and GetToken against the
//	          broker's Check (deployed: one API-key caller, audit to a file,
//	          log level info; and open mode), the order rotating by round
//	watch     WatchToken fan-out: time for a refresh to reach S streams,
//	          broker RSS and live heap per idle stream
//	tenants   T tenants against an IdP with 50 ms latency: time until all
//	          READY, RSS per idle tenant, peak concurrent IdP requests; with
//	          -tenants-dir each tenant is a file of a tenants_dir
//	coalesce  N concurrent GetToken on a cold key and N InvalidateToken for
//	          one fingerprint: identity-provider requests (want 1 each)
//
// Run from the bench directory: go run ./cmd/tbload [-smoke] [-only hit,watch].
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"
)

type options struct {
	bin     string
	only    map[string]bool
	rounds  int
	dur     time.Duration
	conc    int
	streams int
	// streamsPerConn is the watch scenario's streams per connection.
	streamsPerConn int
	tenants        int
	tenantsDir     bool
	idpLatency     time.Duration
	coalesceN      int
	// profile, if set, is a directory for the broker's pprof profiles.
	profile string
	// ghz, if set, is a ghz binary: the hit scenario also measures with it.
	ghz string
}

func main() {
	maybeServeFloor()
	var o options
	smoke := flag.Bool("smoke", false, "small sizes: every scenario in a few seconds (CI)")
	only := flag.String("only", "hit,watch,tenants,coalesce", "comma-separated scenarios to run")
	flag.StringVar(&o.bin, "broker", "", "broker binary to run (default: build ../cmd/broker)")
	flag.IntVar(&o.rounds, "rounds", 3, "hit: rounds, each running floor and GetToken once, order alternating")
	flag.DurationVar(&o.dur, "d", 5*time.Second, "hit: duration of one run")
	flag.IntVar(&o.conc, "c", 50, "hit: concurrent callers (over one connection, as ghz does)")
	flag.IntVar(&o.streams, "streams", 10000, "watch: WatchToken streams")
	flag.IntVar(&o.streamsPerConn, "streams-per-conn", 100, "watch: streams per connection (each connection from a source address of its own in 127.0.0.0/8)")
	flag.IntVar(&o.tenants, "tenants", 1000, "tenants: tenants")
	flag.BoolVar(&o.tenantsDir, "tenants-dir", false, "lay the generated config's tenants out as one file each in a tenants_dir")
	flag.DurationVar(&o.idpLatency, "idp-latency", 50*time.Millisecond, "tenants: identity provider latency")
	flag.IntVar(&o.coalesceN, "n", 10000, "coalesce: concurrent calls")
	flag.StringVar(&o.profile, "profile", "", "directory to write the broker's profiles to (CPU during the first GetToken and floor runs, heap and goroutines when idle)")
	flag.StringVar(&o.ghz, "ghz", "", "hit: also measure with this ghz binary (the issue's load tool; go build -modfile=../tools/ghz.mod -o ghz github.com/bojand/ghz/cmd/ghz)")
	flag.Parse()
	if *smoke {
		o.rounds, o.dur, o.conc, o.streams, o.tenants, o.coalesceN = 2, time.Second, 10, 300, 50, 500
	}
	if o.streamsPerConn < 1 {
		fmt.Fprintln(os.Stderr, "tbload: -streams-per-conn must be at least 1")
		os.Exit(2)
	}
	o.only = map[string]bool{}
	for s := range strings.SplitSeq(*only, ",") {
		o.only[strings.TrimSpace(s)] = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := runAll(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "tbload:", err)
		os.Exit(1)
	}
}

func runAll(ctx context.Context, o options) error {
	if o.bin == "" {
		dir, err := os.MkdirTemp("", "tbload-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if o.bin, err = buildBroker(ctx, dir); err != nil {
			return err
		}
	}
	fmt.Printf("tbload: GOMAXPROCS=%d go=%s\n", numCPU(), goVersion())
	if o.only["watch"] {
		// Each watch connection is a descriptor here and one in the
		// broker, which inherits this process's limit.
		if err := raiseNoFile(uint64(2*((o.streams+o.streamsPerConn-1)/o.streamsPerConn) + 4096)); err != nil {
			return err
		}
	}
	steps := []struct {
		name string
		f    func(context.Context, options) error
	}{
		{"hit", scenarioHit}, {"watch", scenarioWatch}, {"tenants", scenarioTenants}, {"coalesce", scenarioCoalesce},
	}
	for _, s := range steps {
		if !o.only[s.name] {
			continue
		}
		if err := s.f(ctx, o); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}
