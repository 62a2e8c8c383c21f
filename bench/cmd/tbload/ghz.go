package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
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
// issue measured: bare floor, the broker's Check and GetToken, the order
// rotating round by round.
func ghzRounds(ctx context.Context, o options, b *brokerProc, bare *floorProc, deployed bool, label string) error {
	fmt.Printf("-- the same with ghz (%s): c=%d, one connection, %s per run, %d rounds\n", o.ghz, o.conc, o.dur, o.rounds)
	return hitTable(o, label, "hit-ghz", func(_ int, name string) (run, error) {
		return withCPU(serverPID(b, bare, name), func() (run, error) {
			switch name {
			case "bare": // the same request, its authorization ignored, as tbload's own client sends it
				return ghzRun(ctx, o, bare.addr, "grpc.health.v1.Health.Check", `{}`, deployed)
			case "check":
				return ghzRun(ctx, o, b.addr, "grpc.health.v1.Health.Check", `{}`, deployed)
			}
			return ghzRun(ctx, o, b.addr, "tokenbroker.v1.TokenBrokerService.GetToken", `{"tenant":"t0"}`, deployed)
		})
	})
}
