package clientlib_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/clientlib"
)

func ExampleTransport() {
	// A resource server on loopback that echoes the Authorization header.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("Authorization"))
	}))
	defer srv.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()

	// Transport takes any oauth2.TokenSource. A *clientlib.Source also
	// replaces a token that the server rejects with 401 and retries once.
	client := &http.Client{Transport: clientlib.NewTransport(
		oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "example-token"}),
		clientlib.WithBaseTransport(base),
	)}
	resp, err := client.Get(srv.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: Bearer example-token
}

func ExampleNewHTTPClient() {
	// A broker and a resource server on loopback, for the example.
	d, err := startDemo()
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()

	// In a service, clientlib.NewHTTPClient(ctx) alone reads the broker's
	// address from TOKENBROKER_ADDR (and the tenant from
	// TOKENBROKER_TENANT), or falls back to KOGNIC_CREDENTIALS.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := clientlib.NewHTTPClient(ctx, clientlib.WithBroker(d.BrokerAddr, "default"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	resp, err := client.Client().Get(d.ResourceURL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, len(body) > 0)
	// Output: 200 OK true
}

func ExampleNewHTTPClient_direct() {
	d, err := startDemo()
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()

	// Without a broker: the client-credentials grant straight against the
	// auth server. In a service, KOGNIC_CREDENTIALS or KOGNIC_CLIENT_ID and
	// KOGNIC_CLIENT_SECRET provide the credentials.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := clientlib.NewHTTPClient(ctx,
		clientlib.WithClientCredentials(d.ClientID, d.ClientSecret),
		clientlib.WithAuthServer(d.AuthServer))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	resp, err := client.Client().Get(d.ResourceURL)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status)
	// Output: 200 OK
}

func ExampleNewSource() {
	d, err := startDemo()
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()

	conn, err := grpc.NewClient(d.BrokerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := clientlib.NewSource(ctx, conn, "default") // ctx bounds only the wait for the first token
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	tok, err := src.Token() // from memory, kept fresh by the broker's stream
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.Type(), time.Until(tok.Expiry) > 50*time.Minute)

	// Compose it: an HTTP client, or an oauth2.TokenSource for other
	// libraries.
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: clientlib.NewTransport(src, clientlib.WithBaseTransport(base))}
	resp, err := client.Get(d.ResourceURL)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status)
	// Output:
	// Bearer true
	// 200 OK
}

func ExamplePerRPCCredentials() {
	d, err := startDemo()
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := clientlib.NewHTTPClient(ctx, clientlib.WithBroker(d.BrokerAddr, "default"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// A gRPC service that wants the tenant's token. Over TLS, drop
	// WithInsecureLoopback; it only allows plaintext to loopback.
	conn, err := grpc.NewClient(d.GRPCAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(clientlib.PerRPCCredentials(client.Source(), clientlib.WithInsecureLoopback())))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetStatus())
	// Output: SERVING
}
