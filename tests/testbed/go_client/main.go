// SPDX-License-Identifier: Apache-2.0
//
// A grpc-go client of the test service h2split.test.Echo (tests/testbed/echo.py:
// a JSON header line, no protobuf): ONE channel, a unary RPC every -pace-ms
// until SIGTERM or stdin closes. Every -report-ms it prints its summary so far
// as one JSON line: {"n", "ok", "errors": {CODE: n}, "details", "pods": {pod: n}};
// a last line at the end. Built offline from Debian's golang-google-grpc-dev
// (GO111MODULE=off GOPATH=/usr/share/gocode) by tests/testbed/go_build.py.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// rawCodec passes the Echo service's bytes through as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type summary struct {
	mu      sync.Mutex
	N       int            `json:"n"`
	OK      int            `json:"ok"`
	Errors  map[string]int `json:"errors"`
	Details []string       `json:"details"`
	Pods    map[string]int `json:"pods"`
}

func (s *summary) print() {
	s.mu.Lock()
	b, _ := json.Marshal(s)
	s.mu.Unlock()
	fmt.Println(string(b))
}

func main() {
	target := flag.String("target", "", "HOST:PORT")
	pace := flag.Int("pace-ms", 10, "start an RPC every this many ms")
	report := flag.Int("report-ms", 50, "print the summary every this many ms")
	timeout := flag.Int("rpc-timeout-ms", 5000, "deadline of each RPC")
	flag.Parse()
	conn, err := grpc.Dial(*target, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithTimeout(15*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	fmt.Println(`{"ready": true}`)
	s := &summary{Errors: map[string]int{}, Pods: map[string]int{}}
	stop := make(chan struct{})
	var once sync.Once
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; once.Do(func() { close(stop) }) }()
	go func() {
		t := time.NewTicker(time.Duration(*report) * time.Millisecond)
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.print()
			}
		}
	}()
	req := []byte("{}\n")
	tick := time.NewTicker(time.Duration(*pace) * time.Millisecond)
	for {
		select {
		case <-stop:
			s.print()
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*timeout)*time.Millisecond)
		var resp []byte
		err := conn.Invoke(ctx, "/h2split.test.Echo/Unary", &req, &resp, grpc.ForceCodec(rawCodec{}))
		cancel()
		s.mu.Lock()
		s.N++
		if err != nil {
			st := status.Convert(err)
			s.Errors[st.Code().String()]++
			if len(s.Details) < 5 {
				s.Details = append(s.Details, st.Message())
			}
		} else {
			var head struct {
				Pod string `json:"pod"`
			}
			line := resp
			if i := bytes.IndexByte(resp, '\n'); i >= 0 {
				line = resp[:i]
			}
			json.Unmarshal(line, &head)
			s.OK++
			s.Pods[head.Pod]++
		}
		s.mu.Unlock()
	}
}
