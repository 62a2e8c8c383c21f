package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // the floor's, for -profile
	"os"
	"os/exec"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// The bare floor: grpc-go serving grpc.health.v1.Health with no
// interceptors, no limits and no TLS (reflection registered for ghz), in a process of its own like the
// broker. Every hit ratio is printed against it: it is what a plain gRPC
// service costs on this machine.

// floorEnv makes tbload's own binary serve the floor (see maybeServeFloor).
const floorEnv = "TBLOAD_SERVE_FLOOR"

// maybeServeFloor serves the floor on 127.0.0.1:0 when tbload was started
// as one, printing the address on stdout and serving until stdin closes.
func maybeServeFloor() {
	if os.Getenv(floorEnv) != "1" {
		return
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbload floor:", err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s) // for ghz; it adds nothing to a Check
	// net/http/pprof on a port of its own, for -profile.
	plis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbload floor:", err)
		os.Exit(1)
	}
	go func() { _ = http.Serve(plis, nil) }()
	fmt.Println(lis.Addr().String(), plis.Addr().String())
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString(0) // EOF: the harness is done
		s.Stop()
	}()
	_ = s.Serve(lis)
	os.Exit(0)
}

// floorProc is a running bare floor server.
type floorProc struct {
	cmd   *exec.Cmd
	addr  string
	pprof string // its net/http/pprof's host:port
	done  func()
}

// startFloor runs tbload itself as the bare floor server.
func startFloor(ctx context.Context) (*floorProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), floorEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	f := &floorProc{cmd: cmd, done: func() { _ = stdin.Close(); _ = cmd.Wait() }}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case l := <-line:
		f.addr, f.pprof, _ = strings.Cut(l, " ")
	case <-time.After(10 * time.Second):
	}
	if f.addr == "" {
		_ = cmd.Process.Kill()
		f.done()
		return nil, fmt.Errorf("the bare floor server did not start")
	}
	return f, nil
}

func (f *floorProc) stop() { f.done() }

// cpuProfile is brokerProc.cpuProfile of the floor.
func (f *floorProc) cpuProfile(ctx context.Context, o options, name string, d time.Duration) <-chan error {
	return (&brokerProc{admin: f.pprof}).cpuProfile(ctx, o, name, d)
}

// serverPID is the process that serves call name of hitCalls.
func serverPID(b *brokerProc, bare *floorProc, name string) int {
	if name == "bare" {
		return bare.cmd.Process.Pid
	}
	return b.cmd.Process.Pid
}
