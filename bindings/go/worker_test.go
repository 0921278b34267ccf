package pgq_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

// startTicker runs a fast ticker for the test, and makes queue q tick as soon as events
// wait 50ms.
func startTicker(t *testing.T, c *pgq.Client) *pgq.Ticker {
	t.Helper()
	if err := c.SetQueueConfig("q", "ticker_max_lag", "50 milliseconds"); err != nil {
		t.Fatalf("SetQueueConfig: %v", err)
	}
	tk, err := c.StartTicker(pgq.WithTickerPeriod(20*time.Millisecond), pgq.WithRetryPeriod(50*time.Millisecond))
	if err != nil {
		t.Fatalf("StartTicker: %v", err)
	}
	t.Cleanup(func() { tk.Stop() })
	return tk
}

// seen collects events handled by a worker.
type seen struct {
	mu     sync.Mutex
	ids    map[int64]int
	events []pgq.Event
}

func (s *seen) add(evs []pgq.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[int64]int{}
	}
	for _, ev := range evs {
		s.ids[ev.ID]++
		s.events = append(s.events, ev)
	}
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

func TestWorkerAndTicker(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	tk := startTicker(t, c)

	var got seen
	var calls, maxBatch int
	var mu sync.Mutex
	w, err := c.StartWorker("q", "c", func(b *pgq.Batch) error {
		evs, err := b.Events()
		if err != nil {
			return err
		}
		got.add(evs)
		mu.Lock()
		calls++
		if len(evs) > maxBatch {
			maxBatch = len(evs)
		}
		mu.Unlock()
		return nil
	}, pgq.WithWorkerPollInterval(50*time.Millisecond))
	if err != nil {
		t.Fatalf("StartWorker: %v", err)
	}
	defer w.Close()

	const n = 300
	for i := 0; i < n; i += 30 {
		evs := make([]pgq.NewEvent, 30)
		for j := range evs {
			evs[j] = pgq.TextEvent("w", fmt.Sprint(i+j))
		}
		if err := c.SendMany("q", evs); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the worker to handle every event", 20*time.Second, func() bool { return got.count() >= n })
	waitUntil(t, "the stats to count every event", 10*time.Second, func() bool {
		st, err := w.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.Events == n
	})
	st, err := w.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Batches == 0 || st.HandlerErrors != 0 || st.LastBatch.IsZero() || st.Threads < 1 ||
		st.LookedAhead > st.Batches {
		t.Fatalf("worker stats %+v", st)
	}
	mu.Lock()
	if uint64(calls) != st.Batches || maxBatch == 0 {
		t.Fatalf("%d handler calls (largest batch %d) for %d batches: want one call per batch", calls, maxBatch, st.Batches)
	}
	mu.Unlock()
	if len(got.ids) != n {
		t.Fatalf("%d distinct events, want %d", len(got.ids), n)
	}
	for id, k := range got.ids {
		if k != 1 {
			t.Fatalf("event %d handled %d times", id, k)
		}
	}

	ts, err := tk.Stats()
	if err != nil || ts.Ticks == 0 || ts.Rounds == 0 || ts.LastTick.IsZero() || ts.Active != 1 ||
		ts.FullRounds == 0 || ts.FullRounds > ts.Rounds {
		t.Fatalf("ticker stats %+v, %v", ts, err)
	}

	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := w.Stop(); err != nil {
		t.Fatalf("Stop after Close: %v", err)
	}
	_, err = w.Stats()
	wantStatus(t, err, pgq.ErrInvalidState)

	if err := tk.Stop(); err != nil {
		t.Fatalf("Ticker.Stop: %v", err)
	}
	if err := tk.Stop(); err != nil {
		t.Fatalf("second Ticker.Stop: %v", err)
	}
	_, err = tk.Stats()
	wantStatus(t, err, pgq.ErrInvalidState)
}

func TestWorkerHandlerPanicIsRecoveredAndRedelivered(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	startTicker(t, c)

	var mu sync.Mutex
	var attempts []int64 // batch ids, one per call
	var kept *pgq.Batch
	reported := make(chan error, 10)
	var got seen
	w, err := c.StartWorker("q", "c", func(b *pgq.Batch) error {
		mu.Lock()
		attempts = append(attempts, b.ID())
		first := len(attempts) == 1
		kept = b
		mu.Unlock()
		evs, err := b.Events()
		if err != nil {
			return err
		}
		if first {
			panic("boom")
		}
		got.add(evs)
		return nil
	},
		pgq.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond),
		pgq.WithErrorHandler(func(err error) { reported <- err }),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := c.Send("q", pgq.TextEvent("t", "once")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the event to be handled after the panic", 20*time.Second, func() bool { return got.count() == 1 })

	var err1 error
	select {
	case err1 = <-reported:
	case <-time.After(10 * time.Second):
		t.Fatal("the panic was not reported")
	}
	wantStatus(t, err1, pgq.ErrHandler)
	var pe *pgq.PanicError
	if !errors.As(err1, &pe) || pe.Value != "boom" || len(pe.Stack) == 0 {
		t.Fatalf("reported %v, want a PanicError with value boom and a stack", err1)
	}
	if w.Err() == nil {
		t.Fatal("Worker.Err is nil after a panic")
	}
	// The first two calls had the same batch; later calls (the ticker's next, empty
	// batches) may have come meanwhile.
	mu.Lock()
	if len(attempts) < 2 || attempts[0] != attempts[1] {
		t.Fatalf("handler calls for batches %v: want the same batch twice first", attempts)
	}
	mu.Unlock()
	st, err := w.Stats()
	if err != nil || st.HandlerErrors != 1 {
		t.Fatalf("stats %+v, %v: want 1 handler error", st, err)
	}

	// A batch kept past its handler call is dead.
	mu.Lock()
	b := kept
	mu.Unlock()
	_, err = b.Next()
	wantStatus(t, err, pgq.ErrInvalidState)
	wantStatus(t, b.Retry(1, 0), pgq.ErrInvalidState)
}

func TestWorkerStopOnError(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	startTicker(t, c)
	myErr := errors.New("cannot handle this")
	w, err := c.StartWorker("q", "c", func(b *pgq.Batch) error {
		if err := b.Finish(); !errors.Is(err, pgq.ErrInvalidState) { // the library finishes it
			t.Errorf("Finish in a handler = %v, want ErrInvalidState", err)
		}
		return myErr
	}, pgq.WithStopOnError(true))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := c.Send("q", pgq.TextEvent("t", "bad")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not stop after the handler failed")
	}
	wantStatus(t, err, pgq.ErrHandler)
	if !errors.Is(err, myErr) {
		t.Fatalf("Wait = %v, want it to wrap the handler's error", err)
	}
	if err := w.Close(); !errors.Is(err, pgq.ErrHandler) && err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Nothing was lost: the event is still there for the consumer.
	co, err := c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	// The handler may have failed on an empty batch cut before the event committed (the
	// ticker ticks eagerly): finish empty batches until the event's batch comes.
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := co.NextBatch(10 * time.Second)
		if err != nil || b == nil {
			t.Fatalf("NextBatch: %v %v", b, err)
		}
		evs, err := b.Events()
		if err == nil && len(evs) == 0 && time.Now().Before(deadline) {
			if err := b.Finish(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err != nil || len(evs) != 1 || *evs[0].Data != "bad" {
			t.Fatalf("events %+v, %v", evs, err)
		}
		b.Close()
		break
	}
}

func TestWorkerStopFromHandlerAndRetry(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	startTicker(t, c)

	var wmu sync.Mutex
	var w *pgq.Worker
	var got seen
	stopped := make(chan struct{})
	handler := func(b *pgq.Batch) error {
		evs, err := b.Events()
		if err != nil {
			return err
		}
		got.add(evs)
		for _, ev := range evs {
			if ev.Retry == 0 {
				if err := b.Retry(ev.ID, 0); err != nil {
					return err
				}
				continue
			}
			// The retried delivery: done, stop the worker from its own handler.
			wmu.Lock()
			defer wmu.Unlock()
			if err := w.Stop(); err != nil {
				return err
			}
			if err := w.Wait(); !errors.Is(err, pgq.ErrWouldDeadlock) {
				t.Errorf("Wait in the handler = %v, want ErrWouldDeadlock", err)
			}
			close(stopped)
		}
		return nil
	}
	wmu.Lock()
	w, err := c.StartWorker("q", "c", handler)
	wmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	id, err := c.Send("q", pgq.TextEvent("t", "twice"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the retried event did not come back")
	}
	if err := w.Wait(); err != nil {
		t.Fatalf("Wait after Stop from the handler: %v", err)
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	if len(got.events) != 2 || got.events[0].ID != id || got.events[1].ID != id || got.events[1].Retry != 1 {
		t.Fatalf("handled %+v, want event %d twice, the second time with Retry 1", got.events, id)
	}
}

func TestWorkerBadInput(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	ok := func(*pgq.Batch) error { return nil }
	_, err := c.StartWorker("q", "c", nil)
	wantStatus(t, err, pgq.ErrInvalidInput)
	_, err = c.StartWorker("", "c", ok)
	wantStatus(t, err, pgq.ErrInvalidInput)
	_, err = c.StartWorker("q", "c\xff", ok)
	wantStatus(t, err, pgq.ErrInvalidUTF8)
	_, err = c.StartWorker("q", "c", ok, pgq.WithWorkerFetchSize(0))
	wantStatus(t, err, pgq.ErrInvalidInput)
	_, err = c.StartWorker("q", "c", ok, pgq.WithWorkerPollInterval(-time.Second))
	wantStatus(t, err, pgq.ErrOutOfRange)
	_, err = c.StartWorker("q", "c", ok, pgq.WithRetryBackoff(time.Second, time.Millisecond))
	wantStatus(t, err, pgq.ErrInvalidInput)
	_, err = c.StartTicker(pgq.WithTickerPeriod(0))
	wantStatus(t, err, pgq.ErrInvalidInput)
	_, err = c.StartTicker(pgq.WithTickerName("\xff"))
	wantStatus(t, err, pgq.ErrInvalidUTF8)
	c.Close()
	_, err = c.StartWorker("q", "c", ok)
	wantStatus(t, err, pgq.ErrInvalidState)
	_, err = c.StartTicker()
	wantStatus(t, err, pgq.ErrInvalidState)
}

func TestWorkerCloseWaitsForRunningHandler(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	startTicker(t, c)
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	var handled int64
	w, err := c.StartWorker("q", "c", func(b *pgq.Batch) error {
		evs, err := b.Events()
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		once.Do(func() { close(entered) })
		<-release
		atomic.AddInt64(&handled, int64(len(evs)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send("q", pgq.TextEvent("t", "slow")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler was not called")
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while the handler was still running", err)
	default:
	}
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return after the handler did")
	}
	if n := atomic.LoadInt64(&handled); n != 1 {
		t.Fatalf("handled %d events", n)
	}
	// The handler returned nil, so its batch was finished: nothing is delivered again.
	tick(t, c, "q")
	co, err := c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	if got := consumeAll(t, co); len(got) != 0 {
		t.Fatalf("delivered again after a finished handler call: %+v", got)
	}
}

func TestCooperativeWorkerThreads(t *testing.T) {
	c, _ := openClient(t)
	if _, err := c.CreateQueue("q"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RegisterConsumer("q", "c"); err != nil {
		t.Fatal(err)
	}
	startTicker(t, c)
	var got seen
	var subsMu sync.Mutex
	subs := map[string]bool{}
	w, err := c.StartWorker("q", "c", func(b *pgq.Batch) error {
		evs, err := b.Events()
		if err != nil {
			return err
		}
		subsMu.Lock()
		subs[b.Subconsumer()] = true
		subsMu.Unlock()
		got.add(evs)
		return nil
	}, pgq.WithSubconsumer("w", 0), pgq.WithWorkers(2))
	if err != nil {
		t.Fatalf("StartWorker in cooperative mode: %v", err)
	}
	defer w.Close()
	const n = 200
	for i := 0; i < n; i++ {
		if _, err := c.Send("q", pgq.TextEvent("t", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the workers to handle every event", 30*time.Second, func() bool { return got.count() >= n })
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	if len(got.ids) != n || len(got.events) != n {
		t.Fatalf("%d events handled, %d distinct, want %d once each", len(got.events), len(got.ids), n)
	}
	subsMu.Lock()
	defer subsMu.Unlock()
	for sub := range subs {
		if sub != "w-0" && sub != "w-1" {
			t.Fatalf("batch held by subconsumer %q, want w-0 or w-1 (%v)", sub, subs)
		}
	}
}

func TestTickerEagerOption(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	// Rule-based ticking only, and the queue's rules make a tick wait for 1000 events or a
	// day: only an eager ticker would tick this queue.
	for _, kv := range [][2]string{{"ticker_max_count", "1000"}, {"ticker_max_lag", "1 day"}, {"ticker_idle_period", "1 day"}} {
		if err := c.SetQueueConfig("q", kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	lazy, err := c.StartTicker(pgq.WithTickerPeriod(10*time.Millisecond), pgq.WithTickerEager(false, 0))
	if err != nil {
		t.Fatal(err)
	}
	rounds := func(tk *pgq.Ticker) uint64 {
		st, err := tk.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.Rounds
	}
	// (A queue with a single tick gets an idle tick at once, by PGQ's rules: let that pass.)
	waitUntil(t, "some rounds of the rule-based ticker", 10*time.Second, func() bool { return rounds(lazy) >= 3 })
	info, err := c.QueueInfo("q")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send("q", pgq.TextEvent("t", "d")); err != nil {
		t.Fatal(err)
	}
	r0 := rounds(lazy)
	waitUntil(t, "more rounds of the rule-based ticker", 10*time.Second, func() bool { return rounds(lazy) >= r0+5 })
	if err := lazy.Stop(); err != nil {
		t.Fatal(err)
	}
	if after, err := c.QueueInfo("q"); err != nil || after.LastTickID != info.LastTickID {
		t.Fatalf("rule-based ticker ticked: last tick %d -> %d (%v)", info.LastTickID, after.LastTickID, err)
	}
	eager, err := c.StartTicker(pgq.WithTickerPeriod(10*time.Millisecond), pgq.WithTickerEager(true, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer eager.Stop()
	waitUntil(t, "the eager ticker to tick", 10*time.Second, func() bool {
		after, err := c.QueueInfo("q")
		if err != nil {
			t.Fatal(err)
		}
		return after.LastTickID > info.LastTickID
	})
	_, err = c.StartTicker(pgq.WithTickerEager(true, -time.Second))
	wantStatus(t, err, pgq.ErrOutOfRange)
}
