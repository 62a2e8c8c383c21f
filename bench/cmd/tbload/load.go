package main

import (
	"context"
	"slices"
	"sync"
	"time"
)

// run is one closed-loop measurement: c workers calling back to back.
type run struct {
	rps      float64
	p50, p99 time.Duration
	calls    int
	errs     int
	firstErr error
	// cpu is the server process's CPU time (user + system) during the
	// run: with calls, what a call costs the server, which the other
	// load on a shared machine disturbs less than the throughput.
	cpu time.Duration
}

func (r run) cpuPerCall() time.Duration {
	if r.calls == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.calls)
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// withCPU runs measure and records the CPU time process pid used meanwhile.
func withCPU(pid int, measure func() (run, error)) (run, error) {
	c0 := cpuTimeOf(pid)
	r, err := measure()
	r.cpu = cpuTimeOf(pid) - c0
	return r, err
}

// closedLoop runs call from c workers for d and returns the throughput
// and latency percentiles of the successful calls.
func closedLoop(ctx context.Context, c int, d time.Duration, call func(context.Context) error) run {
	var (
		mu   sync.Mutex
		lats = make([]time.Duration, 0, 1<<16)
		r    run
		wg   sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for range c {
		wg.Go(func() {
			local := make([]time.Duration, 0, 1<<12)
			var errs int
			var firstErr error
			for {
				t := time.Now()
				if !t.Before(end) {
					break
				}
				if err := call(ctx); err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lats = append(lats, local...)
			r.errs += errs
			if r.firstErr == nil {
				r.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lats)
	r.calls = len(lats)
	r.rps = float64(len(lats)) / el.Seconds()
	r.p50 = pct(lats, 0.50)
	r.p99 = pct(lats, 0.99)
	return r
}

func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * q)
	return sorted[i]
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
