package policy_test

import (
	"fmt"

	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

func Example() {
	p, err := policy.New([]policy.Caller{{
		Name:     "billing",
		SPIFFEID: "spiffe://prod/ns/billing/sa/api",
		Tenants:  []string{"acme", "team-*"},
		Scopes:   []string{"read:*"},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	c, _ := p.Lookup(authn.Identity{Kind: authn.KindSPIFFE, Value: "spiffe://prod/ns/billing/sa/api"})
	fmt.Println(c.Name)
	fmt.Println(c.TenantAllowed("team-a"), c.ScopesAllowed([]string{"read:inputs"}))
	fmt.Println(c.ScopesAllowed([]string{"write:inputs"}))
	fmt.Println(c.TenantAllowed("globex"))
	// Output:
	// billing
	// true true
	// false
	// false
}
