package pgq_test

import (
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	pgq "github.com/libpgq/libpgq/bindings/go"
	"github.com/libpgq/libpgq/bindings/go/internal/cabench"
)

// fillBench creates queue "bench" with consumer "c" and n events waiting for it (about 60
// bytes of data each) in one batch.
func fillBench(b *testing.B, c *pgq.Client, n int) {
	setupQueue(b, c, "bench", "c")
	const chunk = 10_000
	evs := make([]pgq.NewEvent, 0, chunk)
	for sent := 0; sent < n; {
		evs = evs[:0]
		for i := 0; i < chunk && sent < n; i++ {
			evs = append(evs, pgq.TextEvent("bench", fmt.Sprintf(`{"n": %d, "payload": "0123456789abcdef0123456789"}`, sent)))
			sent++
		}
		if err := c.SendMany("bench", evs); err != nil {
			b.Fatal(err)
		}
	}
	tick(b, c, "bench")
	runtime.GC() // settle the garbage of filling, so that sweeping it is not measured
}

// benchEvents fills a fresh queue (fillBench) and returns a consumer positioned before the
// events.
func benchEvents(b *testing.B, n int) (*pgq.Client, *pgq.Consumer) {
	c, _ := openClient(b)
	fillBench(b, c, n)
	co, err := c.NewConsumer("bench", "c", pgq.WithFetchSize(1000))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { co.Close() })
	return c, co
}

// BenchmarkConsume measures the consume rate through Go: one op is one event taken from a
// batch with Batch.Next (all fields copied into Go), the batch finished at the end.
func BenchmarkConsume(b *testing.B) {
	_, co := benchEvents(b, b.N)
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	got := 0
	for got < b.N {
		batch, err := co.NextBatch(time.Second)
		if err != nil || batch == nil {
			b.Fatalf("NextBatch = %v, %v after %d of %d events", batch, err, got, b.N)
		}
		for {
			ev, err := batch.Next()
			if err != nil {
				b.Fatal(err)
			}
			if ev == nil {
				break
			}
			got++
		}
		if err := batch.Finish(); err != nil {
			b.Fatal(err)
		}
	}
	reportRates(b, got, start, cpu0)
}

// BenchmarkSendMany measures producing through Go: one op is one event, sent in
// SendMany calls of 1000 (COPY, one transaction each).
func BenchmarkSendMany(b *testing.B) {
	c, _ := openClient(b)
	setupQueue(b, c, "bench", "c")
	evs := make([]pgq.NewEvent, 1000)
	for i := range evs {
		evs[i] = pgq.TextEvent("bench", fmt.Sprintf(`{"n": %d, "payload": "0123456789abcdef0123456789"}`, i))
	}
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; sent += len(evs) {
		n := len(evs)
		if b.N-sent < n {
			n = b.N - sent
		}
		if err := c.SendMany("bench", evs[:n]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkSend measures single-event sends (one transaction each).
func BenchmarkSend(b *testing.B) {
	c, _ := openClient(b)
	setupQueue(b, c, "bench", "c")
	ev := pgq.TextEvent("bench", `{"payload": "0123456789abcdef0123456789"}`)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Send("bench", ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConsumeCABI is BenchmarkConsume's baseline: the same loop written in C against
// the C ABI (internal/cabench), reading every field of every event without copying it.
func BenchmarkConsumeCABI(b *testing.B) {
	c, dsn := openClient(b)
	fillBench(b, c, b.N)
	cc, err := cabench.Open(dsn, "bench", "c", 1000)
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	got, err := cc.Consume(int64(b.N))
	if err != nil {
		b.Fatalf("after %d of %d events: %v", got, b.N, err)
	}
	reportRates(b, int(got), start, cpu0)
}

// processCPU is the CPU time (user + system) this process used so far: the client side of
// consuming, without the server's share, so less sensitive to load from elsewhere.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportRates(b *testing.B, events int, start time.Time, cpu0 time.Duration) {
	b.ReportMetric(float64(events)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(float64(processCPU()-cpu0)/float64(events), "client-cpu-ns/event")
}
