package clientlib

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/local"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// brokerServiceConfig spreads calls over every address of the broker name
// and retries the unary calls, which are safe to repeat, on UNAVAILABLE (a
// replica shutting down or gone), so that another replica answers.
const brokerServiceConfig = `{"loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{"name": [{"service": "tokenbroker.v1.TokenBrokerService", "method": "GetToken"},
      {"service": "tokenbroker.v1.TokenBrokerService", "method": "InvalidateToken"},
      {"service": "tokenbroker.v1.TokenBrokerService", "method": "ListTenants"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
      "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`

// brokerKeepalive detects a vanished broker replica on an idle watch stream.
// The broker server permits pings every 20s (internal/server).
var brokerKeepalive = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// dialBroker creates the connection to the broker; it connects lazily.
func dialBroker(addr string, cfg *clientConfig) (*grpc.ClientConn, error) {
	target := brokerTarget(addr)
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	if isLocalTarget(target) {
		creds = local.NewCredentials()
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(brokerServiceConfig),
		grpc.WithKeepaliveParams(brokerKeepalive),
		grpc.WithUserAgent(userAgent),
	}, cfg.dialOpts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("clientlib: broker %s: %w", addr, err)
	}
	return conn, nil
}

// brokerTarget turns a host:port into a dns:/// target and keeps a target
// that already names a registered resolver scheme.
func brokerTarget(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Scheme != "" && resolver.Get(u.Scheme) != nil {
		return addr
	}
	return "dns:///" + addr
}

// isLocalTarget reports whether a target names a unix socket or a loopback
// host.
func isLocalTarget(target string) bool {
	u, err := url.Parse(target)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "unix", "unix-abstract":
		return true
	}
	endpoint := cmp.Or(strings.TrimPrefix(u.Path, "/"), u.Opaque)
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil { // no port
		host = strings.TrimSuffix(strings.TrimPrefix(endpoint, "["), "]")
	}
	return upstream.IsLoopbackHost(host)
}

// modulePath is the module this package belongs to.
const modulePath = "github.com/tokenbroker/tokenbroker"

// userAgent is sent to the auth server in direct mode and to the broker.
var userAgent = "tokenbroker-clientlib/" + moduleVersion() + " go/" + runtime.Version()

// moduleVersion returns the version of this module in the running binary,
// or "devel".
func moduleVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if bi.Main.Path == modulePath && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == modulePath && d.Version != "" {
			return d.Version
		}
	}
	return "devel"
}
