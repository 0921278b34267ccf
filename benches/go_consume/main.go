// No-op pull consumer over libpgq's Go binding (bindings/go), for the benchmarks
// (benches/bench/consume.rs).
//
//	go_consume DSN QUEUE CONSUMER FETCH_SIZE
//
// Drains the consumer's backlog (NextBatch with timeout 0 until there is no batch), touching
// every field of every event, then prints one JSON line: events, batches, secs, cpu_secs,
// peak_rss_kib. It then keeps its connections open until stdin is closed, so that the
// benchmark can read the CPU time of its server backends. scripts/bench.sh builds it with
// -tags pgq_release (the release library, linked statically).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "go_consume: %s: %v\n", what, err)
	os.Exit(1)
}

func strLen(s *string) int {
	if s == nil {
		return 0
	}
	return len(*s)
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: go_consume DSN QUEUE CONSUMER FETCH_SIZE")
		os.Exit(2)
	}
	dsn, queue, name := os.Args[1], os.Args[2], os.Args[3]
	fetch, err := strconv.Atoi(os.Args[4])
	if err != nil {
		fail("fetch size", err)
	}
	start := time.Now()
	// Two connections: the next batch is read ahead on the second while one is handled.
	client, err := pgq.Open(dsn, pgq.WithPoolSize(2))
	if err != nil {
		fail("connect", err)
	}
	co, err := client.NewConsumer(queue, name, pgq.WithFetchSize(fetch))
	if err != nil {
		fail("consumer", err)
	}
	var events, batches, sink int64
	b, err := co.NextBatch(0)
	if err != nil {
		fail("next batch", err)
	}
	for b != nil {
		for {
			ev, err := b.Next()
			if err != nil {
				fail("next event", err)
			}
			if ev == nil {
				break
			}
			// The same work as the other consumers: look at every field.
			sink += ev.ID + ev.TxID + int64(ev.Retry) + ev.Time.UnixMicro() +
				int64(strLen(ev.Type)+strLen(ev.Data)+strLen(ev.Extra1)+strLen(ev.Extra2)+
					strLen(ev.Extra3)+strLen(ev.Extra4))
			events++
		}
		if b, err = b.FinishAndNext(co); err != nil {
			fail("finish", err)
		}
		batches++
	}
	secs := time.Since(start).Seconds()
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	out, _ := json.Marshal(map[string]interface{}{
		"events": events, "batches": batches, "secs": secs, "cpu_secs": cpu,
		"peak_rss_kib": ru.Maxrss, "sink": sink & 1,
	})
	fmt.Println(string(out))
	// Hold the connection until the benchmark has read our backend's CPU time.
	_, _ = io.Copy(io.Discard, os.Stdin)
	co.Close()
	client.Close()
}
