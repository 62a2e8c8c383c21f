package statuspage

import "github.com/tokenbroker/tokenbroker/broker"

// FromBroker shows b's tenants. It copies only what the page may show:
// the token URL is reduced to its host; the last error shows URLs as
// upstream.RedactURL does (see cleanError).
// It panics if b is nil.
func FromBroker(b Tenants) Source {
	if b == nil {
		panic("statuspage: FromBroker: nil broker")
	}
	return brokerSource{b}
}

// Tenants is what FromBroker needs of a *broker.Broker.
type Tenants interface {
	Tenants() []broker.TenantInfo
}

type brokerSource struct{ b Tenants }

func (s brokerSource) Tenants() []Tenant {
	infos := s.b.Tenants()
	out := make([]Tenant, 0, len(infos))
	for _, ti := range infos {
		t := Tenant{
			Name:        ti.Name,
			State:       ti.Status.State.String(),
			Expiry:      ti.Expiry,
			NextRefresh: ti.Status.NextRefresh,
			Host:        HostOf(ti.TokenURL),
			ScopeSets:   ti.ScopeSets,
			Watches:     ti.Watches,
		}
		if err := ti.Status.LastError; err != nil {
			t.LastError = err.Error() // upstream errors show the URL redacted
		}
		out = append(out, t)
	}
	return out
}
