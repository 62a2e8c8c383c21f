// Package limits declares the broker's limits in one type: each knob's
// YAML key, default and bounds, read by the config parser, the access
// guard, the gRPC server and the broker core alike.
//
// A zero field means its default (WithDefaults); a negative one means no
// limit, for tests and benchmarks only: Validate, which the config file
// goes through, refuses it.
package limits

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"time"
)

// Limits bound what one caller, and any peer before authentication, may
// make the broker do. The tags declare each knob once: its key in the
// config file's limits section, its default and its bounds.
type Limits struct {
	// Per authenticated caller (the guard).
	RequestsPerSecond      float64 `yaml:"requests_per_second" default:"2000" min:"0" max:"1000000"`
	Burst                  int     `yaml:"burst" default:"4000" min:"1" max:"1000000"`
	InvalidationsPerSecond float64 `yaml:"invalidations_per_second" default:"5" min:"0" max:"1000000"`
	InvalidationBurst      int     `yaml:"invalidation_burst" default:"20" min:"1" max:"1000000"`
	// MaxStreamsPerCaller caps a caller's open calls, unary ones and
	// streams, over all its addresses, counted from their HEADERS.
	MaxStreamsPerCaller int `yaml:"max_streams_per_caller" default:"1000" min:"1" max:"1000000"`
	// MaxScopesPerRequest counts distinct scopes; the API allows 32.
	MaxScopesPerRequest int `yaml:"max_scopes_per_request" default:"32" min:"1" max:"32"`
	// NewScopeSetsPerSecond and NewScopeSetBurst bound how fast one caller
	// creates scope sets not cached yet: each costs an IdP request.
	NewScopeSetsPerSecond float64 `yaml:"new_scope_sets_per_second" default:"5" min:"0" max:"1000000"`
	NewScopeSetBurst      int     `yaml:"new_scope_set_burst" default:"50" min:"1" max:"1000000"`

	// Per peer, before authentication (the server and the guard's
	// refusals).
	DenialsPerSecondPerIP float64 `yaml:"denials_per_second_per_ip" default:"10" min:"0" max:"1000000"`
	DenialBurstPerIP      int     `yaml:"denial_burst_per_ip" default:"50" min:"1" max:"1000000"`
	// MaxMessageBytes caps a received message: a valid request (32 scopes
	// of 256 bytes) is about 9 KiB.
	MaxMessageBytes int `yaml:"max_message_bytes" default:"65536" min:"16384" max:"4194304"`
	// MaxHeaderListBytes caps a request's metadata; an API key header and
	// gRPC's own headers fit in 4 KiB.
	MaxHeaderListBytes  int `yaml:"max_header_list_bytes" default:"16384" min:"4096" max:"1048576"`
	MaxStreamsPerConn   int `yaml:"max_streams_per_connection" default:"100" min:"1" max:"1000000"`
	MaxConnections      int `yaml:"max_connections" default:"1024" min:"1" max:"1000000"`
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip" default:"16" min:"1" max:"1000000"`
	// MaxAnonymousStreamsPerIP caps the open calls, counted from their
	// HEADERS, of one peer IP whose credentials name no caller.
	MaxAnonymousStreamsPerIP int           `yaml:"max_anonymous_streams_per_ip" default:"16" min:"1" max:"1000000"`
	HandshakeTimeout         time.Duration `yaml:"handshake_timeout" default:"5s" min:"100ms" max:"1h"`
	MaxConnectionIdle        time.Duration `yaml:"max_connection_idle" default:"5m" min:"1s" max:"720h"`

	// The broker core.
	// MaxIdPRequestsPerHost bounds the concurrent token requests to one
	// identity-provider host, over all tenants.
	MaxIdPRequestsPerHost int `yaml:"max_idp_requests_per_host" default:"128" min:"1" max:"10000"`
	// MaxScopeSetsPerTenant counts a tenant's default set; MaxScopeSets
	// the other sets of all tenants.
	MaxScopeSetsPerTenant int `yaml:"max_scope_sets_per_tenant" default:"64" min:"1" max:"1000000"`
	MaxScopeSets          int `yaml:"max_scope_sets" default:"4096" min:"1" max:"1000000"`

	// Ignored, replaced by the two stream caps above; parsed so that an
	// older config loads, with a warning (see Deprecated).
	MaxOpenStreamsPerIP int `yaml:"max_open_streams_per_ip" default:"0" min:"0" max:"1000000" deprecated:"max_anonymous_streams_per_ip"`
	MaxStreamsPerIP     int `yaml:"max_streams_per_ip" default:"0" min:"0" max:"1000000" deprecated:"max_streams_per_caller"`
	MaxStreamsPerAPIKey int `yaml:"max_streams_per_api_key" default:"0" min:"0" max:"1000000" deprecated:"max_streams_per_caller"`
}

// Default returns every limit at its default.
func Default() Limits { return Limits{}.WithDefaults() }

// WithDefaults returns l with each zero field set to its default.
func (l Limits) WithDefaults() Limits {
	v := reflect.ValueOf(&l).Elem()
	for i, f := range fields {
		if fv := v.Field(i); fv.IsZero() {
			fv.Set(f.def)
		}
	}
	return l
}

// FieldError is a limit out of its bounds.
type FieldError struct {
	// Key is the limit's key in the limits section, e.g. "burst".
	Key string
	Err error
}

func (e *FieldError) Error() string { return "limits." + e.Key + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// Validate reports the first field outside its bounds, a *FieldError,
// among the non-zero ones and those named in keys (a config file's 0).
func (l Limits) Validate(keys ...string) error {
	v := reflect.ValueOf(l)
	for i, f := range fields {
		fv := v.Field(i)
		if fv.IsZero() && !slices.Contains(keys, f.key) || f.within(fv) {
			continue
		}
		return &FieldError{Key: f.key, Err: fmt.Errorf("must be %s, got %s", f.bounds(), f.show(fv))}
	}
	return nil
}

// Deprecated returns the key that replaced key, if key is deprecated.
func Deprecated(key string) (replacement string, ok bool) {
	for _, f := range fields {
		if f.key == key && f.replacement != "" {
			return f.replacement, true
		}
	}
	return "", false
}

// Keys returns the keys of the limits section, in declaration order,
// deprecated ones included.
func Keys() []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = f.key
	}
	return out
}

// Ptr returns a pointer to the field of key, or nil for an unknown key.
func (l *Limits) Ptr(key string) any {
	for i, f := range fields {
		if f.key == key {
			return reflect.ValueOf(l).Elem().Field(i).Addr().Interface()
		}
	}
	return nil
}

// field is one knob as its tags declare it.
type field struct {
	key           string
	def, min, max reflect.Value
	replacement   string // the key that replaced a deprecated one
}

// fields are the tags of Limits, read once; a bad tag panics in any test.
var fields = func() []field {
	t := reflect.TypeFor[Limits]()
	out := make([]field, t.NumField())
	for i := range t.NumField() {
		sf := t.Field(i)
		out[i] = field{key: sf.Tag.Get("yaml"), def: parse(sf, "default"), min: parse(sf, "min"), max: parse(sf, "max"),
			replacement: sf.Tag.Get("deprecated")}
	}
	return out
}()

func parse(sf reflect.StructField, tag string) reflect.Value {
	s := sf.Tag.Get(tag)
	v := reflect.New(sf.Type).Elem()
	var err error
	switch {
	case sf.Type == reflect.TypeFor[time.Duration]():
		var d time.Duration
		d, err = time.ParseDuration(s)
		v.SetInt(int64(d))
	case sf.Type.Kind() == reflect.Int:
		var n int64
		n, err = strconv.ParseInt(s, 10, 64)
		v.SetInt(n)
	case sf.Type.Kind() == reflect.Float64:
		var f float64
		f, err = strconv.ParseFloat(s, 64)
		v.SetFloat(f)
	default:
		err = fmt.Errorf("unsupported type %s", sf.Type)
	}
	if err != nil {
		panic(fmt.Sprintf("limits: field %s: tag %s: %v", sf.Name, tag, err))
	}
	return v
}

// within reports min <= v <= max; floats must be above a zero min.
func (f field) within(v reflect.Value) bool {
	if v.Kind() == reflect.Float64 {
		x := v.Float()
		return x > f.min.Float() && x <= f.max.Float()
	}
	x := v.Int()
	return x >= f.min.Int() && x <= f.max.Int()
}

func (f field) bounds() string {
	if f.min.Kind() == reflect.Float64 {
		return fmt.Sprintf("a number greater than %s and at most %s", f.show(f.min), f.show(f.max))
	}
	return fmt.Sprintf("from %s to %s", f.show(f.min), f.show(f.max))
}

func (f field) show(v reflect.Value) string {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	}
	return strconv.FormatInt(v.Int(), 10)
}
