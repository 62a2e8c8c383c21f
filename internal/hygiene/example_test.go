package hygiene_test

import (
	"fmt"

	"github.com/tokenbroker/tokenbroker/internal/hygiene"
)

func ExampleCheckUpstreamURL() {
	fmt.Println(hygiene.CheckUpstreamURL("https://auth.app.kognic.com/v1/auth/oauth/token", false))
	fmt.Println(hygiene.CheckUpstreamURL("http://127.0.0.1:8080/token", false))
	fmt.Println(hygiene.CheckUpstreamURL("http://idp.internal/token", false))
	fmt.Println(hygiene.CheckUpstreamURL("http://idp.internal/token", true))
	// Output:
	// <nil>
	// <nil>
	// insecure upstream URL http://idp.internal/token: http sends the client secret in clear text; use https, or set allow_insecure_http: true on the tenant if the network is trusted
	// <nil>
}
