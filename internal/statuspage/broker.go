package statuspage

import "github.com/tokenbroker/tokenbroker/broker"

// FromBroker shows the tenants of b, a *broker.Broker, copying only what
// the page may show: the token URL's host, and the last error, whose URLs
// the broker already redacts (cleanError does it again). It panics if b is nil.
func FromBroker(b interface{ Tenants() []broker.TenantInfo }) Source {
	if b == nil {
		panic("statuspage: FromBroker: nil broker")
	}
	return SourceFunc(func() []Tenant {
		infos := b.Tenants()
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
				t.LastError = err.Error()
			}
			out = append(out, t)
		}
		return out
	})
}
