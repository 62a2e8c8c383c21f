package names_test

import (
	"fmt"

	"github.com/tokenbroker/tokenbroker/broker/names"
)

func Example() {
	scopes, err := names.NormalizeScopes([]string{"write:inputs", "read:inputs", "write:inputs"})
	fmt.Println(scopes, err)

	fmt.Println(names.ValidTenant("acme-prod"))
	fmt.Println(names.ValidTenant("Acme"))
	// Output:
	// [read:inputs write:inputs] <nil>
	// <nil>
	// tenant name "Acme": must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, hyphens)
}
