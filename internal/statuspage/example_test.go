package statuspage_test

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http/httptest"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/statuspage"
)

// A static Source stands in for the broker (statuspage.FromBroker in the
// daemon). The page is served with its security headers; status.json
// carries the same rows for scripts.
func Example() {
	src := statuspage.SourceFunc(func() []statuspage.Tenant {
		return []statuspage.Tenant{
			{Name: "payments", State: "ready", Expiry: time.Now().Add(time.Hour), ScopeSets: 1, Watches: 0},
			{Name: "billing-eu", State: "failing", LastError: "upstream: token request failed: HTTP 503",
				ScopeSets: 1, Watches: 0},
		}
	})
	srv := httptest.NewServer(statuspage.Handler(src, statuspage.WithVersion("v1.2.3")))
	defer srv.Close()

	res, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		log.Fatal(err)
	}
	_ = res.Body.Close()
	fmt.Println(res.Status, res.Header.Get("Content-Type"))
	fmt.Println(res.Header.Get("Content-Security-Policy"))

	res, err = srv.Client().Get(srv.URL + "/status.json")
	if err != nil {
		log.Fatal(err)
	}
	defer res.Body.Close()
	var status struct {
		States  map[string]int `json:"states"`
		Tenants []struct {
			Name      string `json:"name"`
			LastError string `json:"last_error"`
		} `json:"tenants"`
	}
	if err := json.NewDecoder(res.Body).Decode(&status); err != nil {
		log.Fatal(err)
	}
	fmt.Println(status.States)
	for _, t := range status.Tenants {
		fmt.Printf("%s %q\n", t.Name, t.LastError)
	}
	// Output:
	// 200 OK text/html; charset=utf-8
	// default-src 'none'; style-src 'self'; img-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'
	// map[failing:1 ready:1]
	// billing-eu "upstream: token request failed: HTTP 503"
	// payments ""
}
