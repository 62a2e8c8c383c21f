package daemon_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
)

// TestBadAPIKeyRefusedBeforeAnyMessage: the daemon wires the guard's key
// check into the stream-opening tap, so a GetToken stream whose API key
// does not verify is refused UNAUTHENTICATED while its request message is
// still unsent (a half-open call never reaches the interceptors, which
// wait for the message). A good key on the same kind of stream is served.
func TestBadAPIKeyRefusedBeforeAnyMessage(t *testing.T) {
	s := brokertest.StartSecured(t)
	conn := s.Dial(s.TLSOnly())
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	method := tbv1.TokenBrokerService_GetToken_FullMethodName

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.WrongKey)
	stream, err := conn.NewStream(bad, desc, method)
	if err != nil {
		t.Fatal(err)
	}
	// No SendMsg: the server must answer from the headers alone.
	var resp tbv1.GetTokenResponse
	if err := stream.RecvMsg(&resp); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("half-open GetToken with a wrong key: %v, want UNAUTHENTICATED before any message", err)
	}

	good := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.APIKey)
	api := tbv1.NewTokenBrokerServiceClient(conn)
	r, err := api.GetToken(good, &tbv1.GetTokenRequest{Tenant: "team-a"})
	if _, err := s.Record(r.GetToken(), err); err != nil {
		t.Fatalf("GetToken with the right key: %v", err)
	}
}
