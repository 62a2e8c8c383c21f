package creds_test

import (
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

func Example() {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f, err := creds.LoadFile("testdata/valid.json", creds.WithClock(func() time.Time { return now }))
	if err != nil {
		fmt.Println(err)
		return
	}
	c := f.Client()
	fmt.Println(c.ID, c.Scopes)
	fmt.Printf("%v %q\n", c.Secret, c.Secret)
	fmt.Println(c.Source)

	_, err = creds.LoadFile("testdata/expired.json", creds.WithClock(func() time.Time { return now }))
	fmt.Println(err)
	// Output:
	// fake-client-id-0001 [write:inputs read:inputs]
	// [REDACTED] "[REDACTED]"
	// credentials file testdata/valid.json
	// credentials: testdata/expired.json: credentials expired at 2024-01-01T00:00:00Z (key "expires"); generate new credentials in the Kognic app
}

func ExampleFromEnv() {
	env := map[string]string{"KOGNIC_CLIENT_ID": "my-client"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	_, err := creds.FromEnv(lookup)
	fmt.Println(err)
	// Output:
	// credentials: KOGNIC_CLIENT_ID is set but KOGNIC_CLIENT_SECRET is not; set both, or set KOGNIC_CREDENTIALS to a credentials file
}
