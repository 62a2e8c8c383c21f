// Package names validates the identifiers that cross the broker's API
// boundary: tenant names and OAuth2 scopes.
//
// The config loader, the broker core and the gRPC handlers all call these
// functions, so a name that is valid in a config file is valid in a request
// and vice versa.
//
// Error messages carry no package prefix: they are written to be embedded
// after a field path such as "tenants[1].name: ". Every error wraps one of
// ErrInvalidTenant, ErrInvalidScope or ErrTooManyScopes, for errors.Is.
//
// All functions are safe for concurrent use.
package names
