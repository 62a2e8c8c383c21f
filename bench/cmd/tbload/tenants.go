package main

import (
	"context"
	"fmt"
	"time"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// allReady pages through ListTenants and reports whether every tenant's
// default token is READY.
func allReady(ctx context.Context, c tbv1.TokenBrokerServiceClient, want int) (int, error) {
	ready, seen, page := 0, 0, ""
	for {
		r, err := c.ListTenants(ctx, &tbv1.ListTenantsRequest{PageSize: 1000, PageToken: page})
		if err != nil {
			return 0, err
		}
		for _, t := range r.GetTenants() {
			seen++
			if t.GetStatus().GetState() == tbv1.TokenState_TOKEN_STATE_READY {
				ready++
			}
		}
		if page = r.GetNextPageToken(); page == "" {
			break
		}
	}
	if seen != want {
		return ready, fmt.Errorf("ListTenants shows %d tenants, want %d", seen, want)
	}
	return ready, nil
}

func scenarioTenants(ctx context.Context, o options) error {
	layout := "the config file"
	if o.tenantsDir {
		layout = "a tenants_dir, one file each"
	}
	fmt.Printf("\n== tenants: %d tenants in %s, one token endpoint with %s latency, deployed configuration\n", o.tenants, layout, o.idpLatency)
	ctx = callerCtx(ctx, true)
	// Baseline: the same broker with one tenant.
	p1, b1, err := setup(ctx, o, true, 1, o.idpLatency, 0)
	if err != nil {
		return err
	}
	cc1, err := dial(b1.addr)
	if err == nil {
		_, err = waitToken(ctx, tbv1.NewTokenBrokerServiceClient(cc1), nil)
		_ = cc1.Close()
	}
	time.Sleep(2 * time.Second)
	rss1, heap1 := b1.rss(), b1.liveHeap()
	b1.stop()
	p1.close()
	if err != nil {
		return err
	}

	p, b, err := setup(ctx, o, true, o.tenants, o.idpLatency, 0)
	if err != nil {
		return err
	}
	defer p.close()
	defer b.stop()
	cc, err := dial(b.addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	c := tbv1.NewTokenBrokerServiceClient(cc)
	var readyAt, readyServing time.Duration
	deadline := time.Now().Add(120 * time.Second)
	// /readyz (one pass over the tenants), once the IdP saw every tenant,
	// says when all settled; only then does ListTenants, costly at 50,000
	// tenants, confirm that all are READY.
	for {
		for p.total.Load() < int64(o.tenants) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if b.readyz(ctx) {
			readyAt, readyServing = time.Since(b.start), time.Since(b.serving)
			n, err := allReady(ctx, c, o.tenants)
			if err != nil {
				return err
			}
			if n == o.tenants {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not every tenant READY after 120s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	first, last := p.window()
	time.Sleep(2 * time.Second)
	rssT, heapT := b.rss(), b.liveHeap()
	b.snapshot(ctx, o, "tenants")
	fmt.Printf("IdP: %d requests, peak %d concurrent, answers from %s to %s after broker start (served at %s); broker RSS 1 tenant %s, %d tenants %s; live heap %s -> %s\n",
		p.total.Load(), p.peak.Load(), first.Sub(b.start).Round(time.Millisecond), last.Sub(b.start).Round(time.Millisecond), b.serving.Sub(b.start).Round(time.Millisecond),
		mib(rss1), o.tenants, mib(rssT), mib(heap1), mib(heapT))
	fmt.Printf("RESULT tenants=%d all READY %s after broker start, %s after it served (target <= 5s at 10000, <= 25s at 50000); per idle tenant: RSS %.1f KiB (target <= 8 KiB), live heap %.1f KiB; peak concurrent IdP requests %d\n",
		o.tenants, readyAt.Round(time.Millisecond), readyServing.Round(time.Millisecond), float64(rssT-rss1)/1024/float64(o.tenants-1), heapPer(heap1, heapT, o.tenants-1), p.peak.Load())
	return nil
}
