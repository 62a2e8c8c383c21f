package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// cpuProfile starts recording the broker's CPU profile for d into
// o.profile/name.cpu.pb.gz; the channel reports the outcome.
func (p *brokerProc) cpuProfile(ctx context.Context, o options, name string, d time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- p.fetch(ctx, o, fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds()))), name+".cpu.pb.gz")
	}()
	return done
}

// snapshot writes the broker's heap and goroutine profiles to o.profile
// (nothing without -profile).
func (p *brokerProc) snapshot(ctx context.Context, o options, name string) {
	if o.profile == "" {
		return
	}
	for _, f := range []struct{ path, file string }{
		{"/debug/pprof/heap?gc=1", name + ".heap.pb.gz"},
		{"/debug/pprof/goroutine", name + ".goroutine.pb.gz"},
	} {
		if err := p.fetch(ctx, o, f.path, f.file); err != nil {
			fmt.Fprintln(os.Stderr, "tbload: profile:", err)
		}
	}
}

func (p *brokerProc) fetch(ctx context.Context, o options, path, file string) error {
	if err := os.MkdirAll(o.profile, 0o755); err != nil {
		return err
	}
	out := filepath.Join(o.profile, file)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := p.get(ctx, path, f); err != nil {
		f.Close()
		return err
	}
	fmt.Printf("profile: %s (go tool pprof -top %s)\n", out, out)
	return f.Close()
}
