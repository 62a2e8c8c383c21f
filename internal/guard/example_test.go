package guard_test

import (
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/guard"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// Example shows the wiring: a policy holder (Store into it on reload), a
// guard, and its tap and interceptors on a gRPC server. ListTenants
// handlers filter with guard.TenantVisible(ctx).
func Example() {
	p, err := policy.New([]policy.Caller{{
		Name: "ci", APIKeySHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Tenants: []string{"team-*"},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	holder, _ := policy.NewHolder(p)
	g, err := guard.New(guard.Config{Policy: holder, Audit: audit.New(io.Discard), Limits: limits.Limits{MaxStreamsPerCaller: 10}})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := grpc.NewServer(
		grpc.InTapHandle(g.Tap),
		grpc.UnaryInterceptor(g.UnaryInterceptor()),
		grpc.StreamInterceptor(g.StreamInterceptor()),
	)
	defer srv.Stop()
	fmt.Println(g.Open())
	// Output: false
}
