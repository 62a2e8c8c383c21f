package policy_test

import (
	"fmt"

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
	fmt.Println(p.Allowed("billing", "team-a", []string{"read:inputs"}))
	fmt.Println(p.Allowed("billing", "team-a", []string{"write:inputs"}))
	fmt.Println(p.Allowed("billing", "globex", nil))
	fmt.Println(p.VisibleTenants("billing", []string{"acme", "globex", "team-a"}))
	// Output:
	// true
	// false
	// false
	// [acme team-a]
}
