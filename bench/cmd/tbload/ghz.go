package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"time"
)

// ghzReport is the part of ghz's JSON report (-O json) the hit scenario
// reads. Durations are nanoseconds.
type ghzReport struct {
	Count               int                `json:"count"`
	RPS                 float64            `json:"rps"`
	StatusCodes         map[string]int     `json:"statusCodeDistribution"`
	ErrorDistribution   map[string]int     `json:"errorDistribution"`
	LatencyDistribution []ghzLatencyBucket `json:"latencyDistribution"`
}

type ghzLatencyBucket struct {
	Percentage int           `json:"percentage"`
	Latency    time.Duration `json:"latency"`
}

// ghzRun runs ghz (the load tool: a separate process, one
// connection, c workers, server reflection for the schema) for d.
func ghzRun(ctx context.Context, o options, addr, method, data string, deployed bool) (run, error) {
	args := []string{"--insecure", "--call", method, "-d", data, "-c", fmt.Sprint(o.conc),
		"-z", o.dur.String(), "--duration-stop", "ignore", "--connections", "1", "-O", "json"}
	if deployed {
		args = append(args, "-m", fmt.Sprintf(`{"authorization":"Bearer %s"}`, apiKey))
	}
	out, err := exec.CommandContext(ctx, o.ghz, append(args, addr)...).Output()
	if err != nil {
		return run{}, fmt.Errorf("ghz %s: %w", method, err)
	}
	var rep ghzReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return run{}, fmt.Errorf("ghz %s: report: %w", method, err)
	}
	r := run{rps: rep.RPS, calls: rep.StatusCodes["OK"]}
	for code, n := range rep.StatusCodes {
		if code != "OK" {
			r.errs += n
			r.firstErr = fmt.Errorf("%d calls ended %s (%v)", n, code, rep.ErrorDistribution)
		}
	}
	for _, b := range rep.LatencyDistribution {
		switch b.Percentage {
		case 50:
			r.p50 = b.Latency
		case 99:
			r.p99 = b.Latency
		}
	}
	return r, nil
}

// ghzRounds is hitRounds with ghz as the load generator, the way the
// issue measured: the floor and GetToken alternate round by round.
func ghzRounds(ctx context.Context, o options, b *brokerProc, deployed bool, label string) error {
	floor := func() (run, error) {
		return ghzRun(ctx, o, b.addr, "grpc.health.v1.Health.Check", `{}`, deployed)
	}
	hit := func() (run, error) {
		return ghzRun(ctx, o, b.addr, "tokenbroker.v1.TokenBrokerService.GetToken", `{"tenant":"t0"}`, deployed)
	}
	fmt.Printf("-- the same with ghz (%s): c=%d, one connection, %s per run, %d rounds\n", o.ghz, o.conc, o.dur, o.rounds)
	var rpsRatio, p99Ratio []float64
	for i := range o.rounds {
		first, second := floor, hit
		if i%2 == 1 {
			first, second = hit, floor
		}
		r1, err := first()
		if err != nil {
			return err
		}
		r2, err := second()
		if err != nil {
			return err
		}
		f, g := r1, r2
		if i%2 == 1 {
			f, g = r2, r1
		}
		for _, r := range []run{f, g} {
			if r.errs > 0 {
				return fmt.Errorf("ghz: %w", r.firstErr)
			}
		}
		rr, pr := g.rps/f.rps, float64(g.p99)/float64(f.p99)
		rpsRatio, p99Ratio = append(rpsRatio, rr), append(p99Ratio, pr)
		fmt.Printf("round %d: floor %8.0f req/s p50 %-9s p99 %-9s | GetToken %8.0f req/s p50 %-9s p99 %-9s | ratio req/s %.2fx p99 %.2fx\n",
			i+1, f.rps, f.p50.Round(time.Microsecond), f.p99.Round(time.Microsecond), g.rps, g.p50.Round(time.Microsecond), g.p99.Round(time.Microsecond), rr, pr)
	}
	fmt.Printf("RESULT hit-ghz %-8s req/s ratio median %.2fx min %.2fx (target >= 0.90x); p99 ratio median %.2fx max %.2fx (target <= 1.20x)\n",
		label, median(rpsRatio), slices.Min(rpsRatio), median(p99Ratio), slices.Max(p99Ratio))
	return nil
}
