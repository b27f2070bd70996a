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
	"os"
	"runtime"
	"sort"
	"strconv"
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

func main() {
	n := flag.Int("n", 1000000, "iterations per timed benchmark")
	np := flag.Int("parked", 1000000, "number of goroutines to park")
	flag.Parse()
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

	v, s := timed(*n, spawnJoin)
	emit("spawn_join_ns", v, "ns", s)
	v, s = timed(*n, pingPong)
	emit("pingpong_rt_ns", v, "ns", s)
	v, s = timed(*n, yield)
	emit("yield_ns", v, "ns", s)

	rssPer, goPer := parked(*np)
	fmt.Fprintf(out, "BENCH parked_count %d goroutines\n", *np)
	emit("parked_bytes", rssPer, "bytes", nil)
	emit("parked_go_heap_stack_bytes", goPer, "bytes", nil)
}
