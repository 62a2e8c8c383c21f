package clientlib_test

import "context"

// demo runs, on loopback, what the examples talk to: the development IdP,
// a broker serving tenant "default" from it, and an HTTP and a gRPC
// resource server that accept only the IdP's tokens.
type demo struct {
	stack *stack
	res   *resource
	grpc  *grpcResource

	BrokerAddr   string // host:port of the broker
	ResourceURL  string // the HTTP resource server
	GRPCAddr     string // the gRPC resource server
	AuthServer   string // the IdP, for direct mode
	ClientID     string // the tenant's client, for direct mode
	ClientSecret string
}

func startDemo() (*demo, error) {
	s, err := newStack(context.Background(), stackConfig{})
	if err != nil {
		return nil, err
	}
	chk := checker{s.IdP, s.Client.ID}
	g, err := newGRPCResource(chk)
	if err != nil {
		s.Close()
		return nil, err
	}
	r := newResource(s.IdP, s.Client.ID)
	return &demo{
		stack: s, res: r, grpc: g,
		BrokerAddr: s.Addr(), ResourceURL: r.URL, GRPCAddr: g.Addr,
		AuthServer: s.IdP.URL(), ClientID: s.Client.ID, ClientSecret: s.Client.Secret,
	}, nil
}

func (d *demo) Close() {
	d.res.Close()
	d.grpc.Close()
	d.stack.Close()
}
