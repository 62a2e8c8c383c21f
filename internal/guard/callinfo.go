package guard

import "context"

// CallInfo is what the guard learns about a call for its request-log
// line: the caller's name and the tenant it asked for. The server puts an
// empty one in every call's context (WithCallInfo) outside its request
// log; the guard fills it in; the request log appends it (LogFields) only
// to a line it actually writes. That replaces go-grpc-middleware's
// logging.AddFields, which copied all of the call's fields, and then
// deduplicated them through a map, on every call, although a successful
// call's line is discarded at the default level.
//
// A CallInfo belongs to its call's goroutine: the guard writes it before
// the handler runs (streams: when the request message arrives), the
// request log reads it after the handler returned.
type CallInfo struct {
	caller, tenant string
	// authorized is the caller the handler runs for, once the guard
	// allowed the call: CallerFromContext finds it here, which saves a
	// context per call.
	authorized *Caller
}

type callInfoKey struct{}

// callInfoContext carries a CallInfo: one allocation for the context and
// the record.
type callInfoContext struct {
	context.Context
	info CallInfo
}

func (c *callInfoContext) Value(key any) any {
	switch key {
	case callInfoKey{}:
		return &c.info
	case callerKey{}:
		if c.info.authorized != nil {
			return c.info.authorized
		}
	}
	return c.Context.Value(key)
}

// WithCallInfo returns ctx with an empty CallInfo for the guard to fill.
func WithCallInfo(ctx context.Context) context.Context {
	return &callInfoContext{Context: ctx}
}

// CallInfoFrom returns the CallInfo of ctx, or nil.
func CallInfoFrom(ctx context.Context) *CallInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*CallInfo)
	return ci
}

// LogFields appends the request-log fields the guard learned, "caller"
// and "tenant" (each only if known), to fields. A nil CallInfo appends
// none.
func (ci *CallInfo) LogFields(fields []any) []any {
	if ci == nil {
		return fields
	}
	if ci.caller != "" {
		fields = append(fields, "caller", ci.caller)
	}
	if ci.tenant != "" {
		fields = append(fields, "tenant", clip(ci.tenant))
	}
	return fields
}

// logCall names the caller, and the tenant if not empty, in the
// request-log line of the call of ctx (a no-op without a CallInfo).
// Call it only from the call's own goroutine.
func logCall(ctx context.Context, c *Caller, tenant string) {
	CallInfoFrom(ctx).note(c, tenant)
}

func (ci *CallInfo) note(c *Caller, tenant string) {
	if ci == nil {
		return
	}
	ci.caller = c.Name
	if tenant != "" {
		ci.tenant = tenant
	}
}
