package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// The server's own interceptor, one per call kind, outermost: the call's
// context (its guard.CallInfo, its cancellation when Shutdown gives up),
// panic recovery, metrics and the request log in one layer. As separate
// go-grpc-middleware interceptors (recovery, logging, prometheus) they
// cost a third of an empty call: the logging interceptor built its
// fields and a context per call even for the calls it does not log, the
// metrics looked their series up by label values per call. Here a method's
// series are looked up once, and a call's line is built only when written.

// Metrics counts the server's calls (Config.Metrics).
type Metrics interface {
	// Method returns the counters of a method; the server asks once per
	// method, before its first call. typ is go-grpc-middleware's
	// interceptors.GRPCType ("unary", "server_stream", …).
	Method(service, method, typ string) MethodMetrics
}

// MethodMetrics counts one method's calls; its methods are called on
// every call and must neither block nor allocate.
type MethodMetrics interface {
	Started()
	Received()
	Sent()
	Handled(code codes.Code, d time.Duration)
}

type noMetrics struct{}

func (noMetrics) Started()                          {}
func (noMetrics) Received()                         {}
func (noMetrics) Sent()                             {}
func (noMetrics) Handled(codes.Code, time.Duration) {}

// method is what the interceptor needs of a method, made once.
type method struct {
	service, name string
	typ           interceptors.GRPCType
	metrics       MethodMetrics
}

// observer is the interceptor's state. It calls Config's interceptors
// itself: grpc-go's chain would cost a closure per call and layer.
type observer struct {
	s          *Server
	log        *callLog
	metrics    Metrics
	nextUnary  grpc.UnaryServerInterceptor // nil: none
	nextStream grpc.StreamServerInterceptor
	mu         sync.Mutex // serializes additions to methods
	methods    atomic.Pointer[map[string]*method]
}

func newObserver(s *Server, log *callLog, cfg Config) *observer {
	o := &observer{s: s, log: log, metrics: cfg.Metrics,
		nextUnary: cfg.UnaryInterceptor, nextStream: cfg.StreamInterceptor}
	o.methods.Store(&map[string]*method{})
	return o
}

// register makes the methods of every service registered on srv.
func (o *observer) register(srv *grpc.Server) {
	for svc, info := range srv.GetServiceInfo() {
		for _, mi := range info.Methods {
			o.method("/"+svc+"/"+mi.Name, typeOf(mi.IsClientStream, mi.IsServerStream))
		}
	}
}

func typeOf(clientStream, serverStream bool) interceptors.GRPCType {
	switch {
	case clientStream && serverStream:
		return interceptors.BidiStream
	case clientStream:
		return interceptors.ClientStream
	case serverStream:
		return interceptors.ServerStream
	}
	return interceptors.Unary
}

// method returns the method of fullMethod ("/service/method"), making
// it on its first call (copy on write: calls read without a lock).
func (o *observer) method(fullMethod string, typ interceptors.GRPCType) *method {
	if m := (*o.methods.Load())[fullMethod]; m != nil {
		return m
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.methods.Load()
	if m := old[fullMethod]; m != nil {
		return m
	}
	cm := interceptors.NewServerCallMeta(fullMethod, nil, nil)
	m := &method{service: cm.Service, name: cm.Method, typ: typ, metrics: noMetrics{}}
	if o.metrics != nil {
		m.metrics = o.metrics.Method(m.service, m.name, string(typ))
	}
	next := make(map[string]*method, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[fullMethod] = m
	o.methods.Store(&next)
	return m
}

func (o *observer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	m := o.method(info.FullMethod, interceptors.Unary)
	start := time.Now()
	c := &callCtx{Context: ctx, s: o.s}
	c.info.SetCanceler(c)
	m.metrics.Started()
	m.metrics.Received()
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, o.recovered(c, p)
		}
		if err = o.s.abortedStatus(c, err); err == nil {
			m.metrics.Sent()
		}
		c.end()
		o.finish(c, m, start, err)
	}()
	if o.nextUnary == nil {
		return handler(c, req)
	}
	return o.nextUnary(c, req, info, handler)
}

func (o *observer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	m := o.method(info.FullMethod, typeOf(info.IsClientStream, info.IsServerStream))
	start := time.Now()
	cs := &callStream{ServerStream: ss, m: m}
	cs.call.Context, cs.call.s = ss.Context(), o.s
	cs.call.info.SetCanceler(&cs.call)
	m.metrics.Started()
	defer func() {
		if p := recover(); p != nil {
			err = o.recovered(&cs.call, p)
		}
		err = o.s.abortedStatus(&cs.call, err)
		cs.call.end()
		o.finish(&cs.call, m, start, err)
	}()
	if o.nextStream == nil {
		return handler(srv, cs)
	}
	return o.nextStream(srv, cs, info, handler)
}

// recovered is the status of a call whose handler panicked.
func (o *observer) recovered(ctx context.Context, p any) error {
	o.s.log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p))
	return status.Error(codes.Internal, "internal error")
}

// finish counts a call that ended with err and writes its line if the
// log wants it.
func (o *observer) finish(c *callCtx, m *method, start time.Time, err error) {
	d := time.Since(start)
	code := codeOf(err)
	m.metrics.Handled(code, d)
	o.log.finished(c, &c.info, m, start, d, code, err)
}

// codeOf is the status code of a call's error as grpc-go sends it (a
// context error as its code).
func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	return st.Code()
}

// callStream is a stream with its call's context, counting its messages.
type callStream struct {
	grpc.ServerStream
	m    *method
	call callCtx
}

func (s *callStream) Context() context.Context { return &s.call }

func (s *callStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.m.metrics.Sent()
	}
	return err
}

func (s *callStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.m.metrics.Received()
	}
	return err
}

// callCtx is a call's context: grpc-go's, carrying the call's
// guard.CallInfo, cancelled by the guard (CancelCall: a policy change
// revoked the stream) and when Shutdown aborts the calls. The context
// that can be cancelled is made only when the call first asks for Done
// (a call waiting on the identity provider), so that a call that never
// waits makes none; WatchToken is told of CancelCall instead (see
// watchDone).
type callCtx struct {
	context.Context // grpc-go's (the tap's)
	s               *Server
	info            guard.CallInfo

	mu        sync.Mutex // orders CancelCall, ended and making cancel
	ended     bool
	onCancel  func()      // see watchDone
	cancelled atomic.Bool // CancelCall was called
	cancel    atomic.Pointer[callCancel]
}

// callCancel is the part of a callCtx that can be cancelled.
type callCancel struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   func() bool // unregisters from Server.abort; nil once ended
}

func (c *callCtx) Value(key any) any {
	if v, ok := c.info.Value(key); ok {
		return v
	}
	if cc := c.cancel.Load(); cc != nil {
		return cc.ctx.Value(key) // context.Cause and derived contexts find its cancelCtx
	}
	return c.Context.Value(key)
}

func (c *callCtx) Done() <-chan struct{} { return c.cancelable().ctx.Done() }

func (c *callCtx) Err() error {
	if cc := c.cancel.Load(); cc != nil {
		return cc.ctx.Err()
	}
	if c.cancelled.Load() {
		return context.Canceled
	}
	return c.Context.Err()
}

// CancelCall cancels the call's context with cause (guard.Canceler).
// A cause is kept in the context that can be cancelled, made for it if
// need be; without one (the guard's at every stream's end) none is made.
func (c *callCtx) CancelCall(cause error) {
	var cc *callCancel
	if cause != nil {
		cc = c.cancelable()
	}
	c.mu.Lock()
	var notify func()
	if !c.cancelled.Load() {
		c.cancelled.Store(true)
		notify = c.onCancel
	}
	if cc == nil {
		cc = c.cancel.Load()
	}
	c.mu.Unlock()
	if cc != nil {
		cc.cancel(cause)
	}
	if notify != nil {
		notify()
	}
}

func (c *callCtx) cancelable() *callCancel {
	if cc := c.cancel.Load(); cc != nil {
		return cc
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.cancel.Load(); cc != nil {
		return cc
	}
	ctx, cancel := context.WithCancelCause(c.Context)
	cc := &callCancel{ctx: ctx, cancel: cancel}
	switch {
	case c.cancelled.Load() || c.ended:
		cancel(nil)
	default:
		cc.stop = context.AfterFunc(c.s.abort, func() { cancel(errShuttingDown) })
	}
	c.cancel.Store(cc)
	return cc
}

// end cancels the context, if made, when the call returns.
func (c *callCtx) end() {
	c.mu.Lock()
	c.ended = true
	cc := c.cancel.Load()
	c.mu.Unlock()
	if cc != nil && cc.stop != nil {
		cc.stop()
		cc.cancel(nil)
	}
}

// watchDone returns the channel closed when the stream of ctx ends, and
// has cancelled called (once, on any goroutine) when CancelCall cancels
// the call, for WatchToken, which the drain ends before Shutdown would
// abort it: grpc-go's Done, so that the stream makes no context to wait
// on, and one channel less for its goroutine to wait on (112 bytes each
// while it waits). For a context not the server's: its Done.
func watchDone(ctx context.Context, cancelled func()) <-chan struct{} {
	c, ok := ctx.(*callCtx)
	if !ok {
		return ctx.Done()
	}
	c.mu.Lock()
	now := c.cancelled.Load()
	c.onCancel = cancelled
	c.mu.Unlock()
	if now {
		cancelled()
	}
	return c.Context.Done()
}
