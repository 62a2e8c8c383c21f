package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

func scenarioCoalesce(ctx context.Context, o options) error {
	fmt.Printf("\n== coalesce: %d concurrent calls, deployed configuration, IdP latency 100ms\n", o.coalesceN)
	p, b, err := setup(ctx, o, true, 1, 100*time.Millisecond, o.coalesceN)
	if err != nil {
		return err
	}
	defer p.close()
	defer b.stop()
	ctx = callerCtx(ctx, true)
	nconn := (o.coalesceN + 999) / 1000
	clients := make([]tbv1.TokenBrokerServiceClient, nconn)
	for i := range clients {
		cc, err := dial(b.addr)
		if err != nil {
			return err
		}
		defer cc.Close()
		clients[i] = tbv1.NewTokenBrokerServiceClient(cc)
	}
	if _, err := waitToken(ctx, clients[0], nil); err != nil {
		return err
	}
	// Connect every client before the burst.
	for _, c := range clients {
		if _, err := c.ListTenants(ctx, &tbv1.ListTenantsRequest{}); err != nil {
			return err
		}
	}
	scopes := []string{"cold"}
	toks, getReqs, err := burst(p, clients, o.coalesceN, func(c tbv1.TokenBrokerServiceClient) (*tbv1.Token, error) {
		r, err := c.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "t0", Scopes: scopes})
		return r.GetToken(), err
	})
	if err != nil {
		return err
	}
	cur, err := clients[0].GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "t0", Scopes: scopes})
	if err != nil {
		return err
	}
	fp := fingerprint(cur.GetToken().GetAccessToken())
	inv, invReqs, err := burst(p, clients, o.coalesceN, func(c tbv1.TokenBrokerServiceClient) (*tbv1.Token, error) {
		r, err := c.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: "t0", Scopes: scopes, TokenSha256: fp})
		return r.GetToken(), err
	})
	if err != nil {
		return err
	}
	fmt.Printf("RESULT coalesce n=%d: GetToken on a cold key -> %d IdP request(s), %d distinct token(s); InvalidateToken of one fingerprint -> %d IdP request(s), %d distinct token(s) (target 1 and 1)\n",
		o.coalesceN, getReqs, len(toks), invReqs, len(inv))
	if getReqs != 1 || invReqs != 1 {
		return errors.New("coalescing is not exact")
	}
	return nil
}

// burst makes n calls over clients, released at once, and returns the
// distinct tokens they got and the IdP requests for scope cold meanwhile.
func burst(p *idp, clients []tbv1.TokenBrokerServiceClient, n int, call func(tbv1.TokenBrokerServiceClient) (*tbv1.Token, error)) (map[string]int, int, error) {
	before := p.requests("cold")
	var wg sync.WaitGroup
	gate := make(chan struct{})
	var mu sync.Mutex
	versions := map[string]int{}
	var errs []error
	for i := range n {
		c := clients[i%len(clients)]
		wg.Go(func() {
			<-gate
			t, err := call(c)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			versions[fingerprint(t.GetAccessToken())[:12]]++
		})
	}
	close(gate)
	wg.Wait()
	if len(errs) > 0 {
		return nil, 0, fmt.Errorf("%d calls failed, first: %w", len(errs), errs[0])
	}
	return versions, p.requests("cold") - before, nil
}
