package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// memory is the broker's memory at one moment.
type memory struct {
	rss int64
	// settle is how long RSS took to settle; settled is false if it was
	// still moving after the bound.
	settle  time.Duration
	settled bool
	// live is the heap marked live by a forced GC (GODEBUG=gctrace=1).
	live int64
	// From the broker's metrics after that GC: goroutine stack memory,
	// heap spans in use, goroutines.
	stacks, heapInuse int64
	goroutines        int64
}

// idleMemory waits for the broker's RSS to settle (two readings a second
// apart within 1%, at most ~10 s), reads it, then forces a GC (admin
// pprof's heap?gc=1) for the live heap and reads the runtime's stack and
// heap figures from /metrics. RSS is read before the forced GC: an idle
// broker's RSS includes the garbage and GC headroom it has not returned.
func (p *brokerProc) idleMemory(ctx context.Context) (memory, error) {
	var m memory
	start := time.Now()
	prev := p.rss()
	for time.Since(start) < 10*time.Second {
		select {
		case <-ctx.Done():
			return m, ctx.Err()
		case <-time.After(time.Second):
		}
		cur := p.rss()
		if d := cur - prev; d <= cur/100 && -d <= cur/100 {
			m.settled = true
			prev = cur
			break
		}
		prev = cur
	}
	m.rss, m.settle = prev, time.Since(start)
	if err := p.get(ctx, "/debug/pprof/heap?gc=1", io.Discard); err != nil {
		return m, fmt.Errorf("force a GC: %w", err)
	}
	m.live = p.liveHeap()
	var text strings.Builder
	if err := p.get(ctx, "/metrics", &text); err != nil {
		return m, err
	}
	sc := bufio.NewScanner(strings.NewReader(text.String()))
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_stack_inuse_bytes":
			m.stacks = int64(f)
		case "go_memstats_heap_inuse_bytes":
			m.heapInuse = int64(f)
		case "go_goroutines":
			m.goroutines = int64(f)
		}
	}
	return m, sc.Err()
}

// get copies the admin listener's answer to GET path into w.
func (p *brokerProc) get(ctx context.Context, path string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// cpuTime is the CPU time the broker has used so far (user + system,
// /proc/PID/stat; clock ticks of 10 ms).
func (p *brokerProc) cpuTime() time.Duration { return cpuTimeOf(p.cmd.Process.Pid) }

// cpuTimeOf is the CPU time process pid has used so far.
func cpuTimeOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}
