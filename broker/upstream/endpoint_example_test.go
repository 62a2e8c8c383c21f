package upstream_test

import (
	"fmt"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

func ExampleCheckURL() {
	fmt.Println(upstream.CheckURL("https://auth.app.kognic.com/v1/auth/oauth/token", upstream.URLRules{}))
	fmt.Println(upstream.CheckURL("http://127.0.0.1:8080/token", upstream.URLRules{}))
	fmt.Println(upstream.CheckURL("http://idp.internal/token", upstream.URLRules{}))
	fmt.Println(upstream.CheckURL("http://idp.internal/token", upstream.URLRules{AllowInsecureHTTP: true}))
	// Output:
	// <nil>
	// <nil>
	// insecure upstream URL http://idp.internal/token: http sends the client secret in clear text; use https, or set allow_insecure_http: true on the tenant if the network is trusted
	// <nil>
}
