// Command gomicro measures Go runtime primitives (goroutine spawn/join,
// unbuffered channel ping-pong, Gosched, parked-goroutine memory) so they can
// be compared with greenhttp's C++ micro-benchmarks.
//
// stdout carries only lines of the form "BENCH <name> <value> <unit>";
// diagnostics go to stderr.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const reps = 3

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// timed runs f(n/10) as warm-up, then f(n) reps times, and returns the median
// of elapsed-ns/n along with all samples.
func timed(n int, f func(n int)) (float64, []float64) {
	w := n / 10
	if w < 1 {
		w = 1
	}
	f(w)
	samples := make([]float64, 0, reps)
	for i := 0; i < reps; i++ {
		t0 := time.Now()
		f(n)
		samples = append(samples, float64(time.Since(t0).Nanoseconds())/float64(n))
	}
	return median(samples), samples
}

func spawnJoin(n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
	}
	wg.Wait()
}

func pingPong(n int) {
	c1 := make(chan int)
	c2 := make(chan int)
	done := make(chan struct{})
	go func() { // B
		for v := range c1 {
			c2 <- v
		}
		close(done)
	}()
	for i := 0; i < n; i++ { // A
		c1 <- i
		<-c2
	}
	close(c1)
	<-done
}

func yield(n int) {
	done := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			runtime.Gosched()
		}
		close(done)
	}()
	<-done
}

var pageSize = uint64(os.Getpagesize())

// rssBytes reads resident pages from /proc/self/statm.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		fmt.Fprintln(os.Stderr, "gomicro: read statm:", err)
		os.Exit(1)
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		fmt.Fprintln(os.Stderr, "gomicro: bad statm:", string(b))
		os.Exit(1)
	}
	pages, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gomicro: bad statm:", err)
		os.Exit(1)
	}
	return pages * pageSize
}

func goMem() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse + ms.HeapInuse
}

func parked(count int) (rssPer, goPer float64) {
	runtime.GC()
	rss0, mem0 := rssBytes(), goMem()

	ch := make(chan struct{})
	var started, exited sync.WaitGroup
	started.Add(count)
	exited.Add(count)
	for i := 0; i < count; i++ {
		go func() {
			started.Done()
			<-ch
			exited.Done()
		}()
	}
	started.Wait()
	// The last goroutines marked Done just before blocking; give them a moment
	// to actually park.
	time.Sleep(50 * time.Millisecond)
	runtime.GC()
	rss1, mem1 := rssBytes(), goMem()
	fmt.Fprintf(os.Stderr, "gomicro: parked rss %d -> %d, go stack+heap %d -> %d, NumGoroutine=%d\n",
		rss0, rss1, mem0, mem1, runtime.NumGoroutine())

	close(ch)
	exited.Wait()
	return (float64(rss1) - float64(rss0)) / float64(count),
		(float64(mem1) - float64(mem0)) / float64(count)
}

// echoRT: 100 loopback TCP connections, each with a client and a server
// goroutine, doing 1 KB round trips; returns the mean round trip in us.
func echoRT(rounds int) float64 {
	const conns, size = 100, 1024
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "gomicro: listen:", err)
		os.Exit(1)
	}
	var servers sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			servers.Add(1)
			go func(c net.Conn) {
				defer servers.Done()
				defer c.Close()
				buf := make([]byte, size)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}(c)
		}
	}()
	var clients sync.WaitGroup
	t0 := time.Now()
	for k := 0; k < conns; k++ {
		clients.Add(1)
		go func() {
			defer clients.Done()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				fmt.Fprintln(os.Stderr, "gomicro: dial:", err)
				os.Exit(1)
			}
			defer c.Close()
			out := bytes.Repeat([]byte{'e'}, size)
			in := make([]byte, size)
			for i := 0; i < rounds; i++ {
				if _, err := c.Write(out); err != nil {
					os.Exit(1)
				}
				if _, err := io.ReadFull(c, in); err != nil {
					os.Exit(1)
				}
			}
		}()
	}
	clients.Wait()
	us := float64(time.Since(t0).Nanoseconds()) / 1000 / float64(rounds)
	ln.Close()
	return us
}

// sleepWake: how late time.Sleep(1ms) wakes, mean over 200 sleeps, in us.
func sleepWake() float64 {
	const sleeps = 200
	var late time.Duration
	for i := 0; i < sleeps; i++ {
		t := time.Now()
		time.Sleep(time.Millisecond)
		late += time.Since(t) - time.Millisecond
	}
	return float64(late.Nanoseconds()) / sleeps / 1000
}

func median3(f func() float64) (float64, []float64) {
	f()
	s := []float64{f(), f(), f()}
	return median(s), s
}

func main() {
	n := flag.Int("n", 1000000, "iterations per timed benchmark")
	np := flag.Int("parked", 1000000, "number of goroutines to park")
	only := flag.String("only", "", "comma-separated benchmarks to run (spawn_join, pingpong, "+
		"yield, echo, sleep_wake, parked); empty: all")
	flag.Parse()
	wanted := func(name string) bool {
		if *only == "" {
			return true
		}
		for _, w := range strings.Split(*only, ",") {
			if w == name {
				return true
			}
		}
		return false
	}
	if *n < 1 || *np < 1 {
		fmt.Fprintln(os.Stderr, "gomicro: -n and -parked must be >= 1")
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "gomicro: %s GOMAXPROCS=%d NumCPU=%d n=%d parked=%d\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), *n, *np)

	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	emit := func(name string, v float64, unit string, samples []float64) {
		fmt.Fprintf(out, "BENCH %s %.1f %s\n", name, v, unit)
		if samples != nil {
			fmt.Fprintf(os.Stderr, "gomicro: %s samples %v\n", name, samples)
		}
	}

	if wanted("spawn_join") {
		v, s := timed(*n, spawnJoin)
		emit("spawn_join_ns", v, "ns", s)
	}
	if wanted("pingpong") {
		v, s := timed(*n, pingPong)
		emit("pingpong_rt_ns", v, "ns", s)
	}
	if wanted("yield") {
		v, s := timed(*n, yield)
		emit("yield_ns", v, "ns", s)
	}
	if wanted("echo") {
		rounds := *n / 500
		if rounds < 10 {
			rounds = 10
		}
		v, s := median3(func() float64 { return echoRT(rounds) })
		emit("echo_rt_us", v, "us", s)
	}
	if wanted("sleep_wake") {
		v, s := median3(sleepWake)
		emit("sleep_wake_us", v, "us", s)
	}
	if wanted("parked") {
		rssPer, goPer := parked(*np)
		fmt.Fprintf(out, "BENCH parked_count %d goroutines\n", *np)
		emit("parked_bytes", rssPer, "bytes", nil)
		emit("parked_go_heap_stack_bytes", goPer, "bytes", nil)
	}
}
