package pgq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

func strp(s string) *string { return &s }

func eqStr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func showStr(s *string) string {
	if s == nil {
		return "NULL"
	}
	return fmt.Sprintf("%q", *s)
}

func TestSendAndConsumeAllFields(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c1")
	before := time.Now().Add(-time.Minute)

	sent := []pgq.NewEvent{
		pgq.TextEvent("order.created", `{"id": 42}`),
		{Type: strp("t"), Data: strp(""), Extra1: strp("e1"), Extra2: strp("e2 ünïcødé ✓"), Extra3: strp("tab\tnew\nline"), Extra4: strp(`back\slash`)},
		{}, // every field NULL
		{Data: strp(strings.Repeat("x", 100_000))}, // larger than the read-ahead buffer
		pgq.TextEvent("after", "the big one"),
	}
	var ids []int64
	for _, ev := range sent {
		id, err := c.Send("q", ev)
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		ids = append(ids, id)
	}
	tick(t, c, "q")

	co, err := c.NewConsumer("q", "c1")
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	defer co.Close()
	if co.Queue() != "q" || co.Name() != "c1" {
		t.Fatalf("Queue/Name = %q/%q", co.Queue(), co.Name())
	}
	b, err := co.NextBatch(5 * time.Second)
	if err != nil || b == nil {
		t.Fatalf("NextBatch = %v, %v; want a batch", b, err)
	}
	if b.ID() <= 0 || b.TickID() <= 0 || b.PrevTickID() >= b.TickID() {
		t.Fatalf("batch id %d ticks %d..%d", b.ID(), b.PrevTickID(), b.TickID())
	}
	if b.Queue() != "q" || b.Consumer() != "c1" || b.Subconsumer() != "" || b.IsStopping() ||
		b.TickTime().Before(before) || b.TickTime().After(time.Now().Add(time.Minute)) {
		t.Fatalf("batch queue %q consumer %q sub %q stopping %v tick time %v",
			b.Queue(), b.Consumer(), b.Subconsumer(), b.IsStopping(), b.TickTime())
	}
	got, err := b.Events()
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	if len(got) != len(sent) {
		t.Fatalf("got %d events, want %d", len(got), len(sent))
	}
	for i, ev := range got {
		want := sent[i]
		if ev.ID != ids[i] {
			t.Errorf("event %d: id %d, want %d", i, ev.ID, ids[i])
		}
		if ev.Retry != 0 {
			t.Errorf("event %d: retry %d, want 0", i, ev.Retry)
		}
		if ev.TxID <= 0 {
			t.Errorf("event %d: txid %d", i, ev.TxID)
		}
		if ev.Time.Before(before) || ev.Time.After(time.Now().Add(time.Minute)) {
			t.Errorf("event %d: time %v not about now", i, ev.Time)
		}
		pairs := [][2]*string{{ev.Type, want.Type}, {ev.Data, want.Data}, {ev.Extra1, want.Extra1},
			{ev.Extra2, want.Extra2}, {ev.Extra3, want.Extra3}, {ev.Extra4, want.Extra4}}
		for f, p := range pairs {
			if !eqStr(p[0], p[1]) {
				g, w := showStr(p[0]), showStr(p[1])
				if len(g) > 80 {
					g = g[:80] + "..."
				}
				if len(w) > 80 {
					w = w[:80] + "..."
				}
				t.Errorf("event %d field %d: got %s, want %s", i, f, g, w)
			}
		}
	}
	// The batch is at its end: Next keeps saying so.
	if ev, err := b.Next(); ev != nil || err != nil {
		t.Fatalf("Next after the end = %v, %v", ev, err)
	}
	if err := b.Finish(); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if b2, err := co.NextBatch(0); b2 != nil || err != nil {
		t.Fatalf("NextBatch after finishing everything = %v, %v; want nil, nil", b2, err)
	}
}

func TestSendManyInOneTransaction(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "bulk", "c")
	const n = 2500
	evs := make([]pgq.NewEvent, n)
	for i := range evs {
		evs[i] = pgq.TextEvent("n", fmt.Sprint(i))
	}
	if err := c.SendMany("bulk", evs); err != nil {
		t.Fatalf("SendMany: %v", err)
	}
	if err := c.SendMany("bulk", nil); err != nil {
		t.Fatalf("SendMany(nil): %v", err)
	}
	tick(t, c, "bulk")
	co, err := c.NewConsumer("bulk", "c", pgq.WithFetchSize(100))
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	got := consumeAll(t, co)
	if len(got) != n {
		t.Fatalf("consumed %d events, want %d", len(got), n)
	}
	txid := got[0].TxID
	for i, ev := range got {
		if *ev.Data != fmt.Sprint(i) {
			t.Fatalf("event %d has data %q", i, *ev.Data)
		}
		if ev.TxID != txid {
			t.Fatalf("event %d in transaction %d, event 0 in %d: SendMany must use one", i, ev.TxID, txid)
		}
	}
}

// queueOf3 makes queue "q" with consumer "c", sends events "0", "1", "2" (one batch, or a
// batch each when batchEach) and opens "c" on it (closed at cleanup).
func queueOf3(t *testing.T, batchEach bool) (*pgq.Client, *pgq.Consumer) {
	t.Helper()
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	for i := 0; i < 3; i++ {
		if _, err := c.Send("q", pgq.TextEvent("t", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if batchEach {
			tick(t, c, "q")
		}
	}
	if !batchEach {
		tick(t, c, "q")
	}
	co, err := c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { co.Close() })
	return c, co
}

func TestBatchCloseRedelivers(t *testing.T) {
	c, co := queueOf3(t, false)

	b1, err := co.NextBatch(time.Second)
	if err != nil || b1 == nil {
		t.Fatalf("NextBatch: %v %v", b1, err)
	}
	first, err := b1.Next()
	if err != nil || first == nil {
		t.Fatalf("Next: %v %v", first, err)
	}
	if err := b1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b1.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	wantStatus(t, b1.Finish(), pgq.ErrInvalidState)

	b2, err := co.NextBatch(time.Second)
	if err != nil || b2 == nil {
		t.Fatalf("NextBatch after Close: %v %v", b2, err)
	}
	if b2.ID() != b1.ID() {
		t.Fatalf("redelivered batch %d, want the same batch %d", b2.ID(), b1.ID())
	}
	evs, err := b2.Events()
	if err != nil || len(evs) != 3 || evs[0].ID != first.ID {
		t.Fatalf("redelivered events %v, %v", evs, err)
	}
	if err := b2.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := b2.Close(); err != nil {
		t.Fatalf("Close after Finish: %v", err)
	}
	// A closed consumer leaves its batch for redelivery too: nothing is lost.
	b3 := againBatch(t, c, co)
	co.Close()
	b3.Close()
	wantOnlyAgain(t, c, "after closing consumer and batch")
}

// againBatch sends event "again" to "q", ticks, and returns co's batch holding it.
func againBatch(t *testing.T, c *pgq.Client, co *pgq.Consumer) *pgq.Batch {
	t.Helper()
	if _, err := c.Send("q", pgq.TextEvent("t", "again")); err != nil {
		t.Fatal(err)
	}
	tick(t, c, "q")
	b, err := co.NextBatch(time.Second)
	if err != nil || b == nil {
		t.Fatalf("NextBatch: %v %v", b, err)
	}
	return b
}

// wantOnlyAgain checks that consumer "c", opened afresh, gets event "again" and nothing else.
func wantOnlyAgain(t *testing.T, c *pgq.Client, when string) {
	t.Helper()
	co, err := c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	got := consumeAll(t, co)
	if len(got) != 1 || *got[0].Data != "again" {
		t.Fatalf("%s: %v", when, got)
	}
}

// chainBatches reads co's batches one after another with FinishAndNext (at most 10; the
// first waits up to wait) and returns every event's data and, per batch, whether it was read
// ahead.
func chainBatches(t *testing.T, co *pgq.Consumer, wait time.Duration) (seen []string, looked []bool) {
	t.Helper()
	b, err := co.NextBatch(wait)
	for n := 0; b != nil && n < 10; n++ {
		if err != nil {
			t.Fatal(err)
		}
		looked = append(looked, b.LookedAhead())
		evs, err := b.Events()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			seen = append(seen, *ev.Data)
		}
		b, err = b.FinishAndNext(co)
		if err != nil {
			t.Fatalf("FinishAndNext: %v", err)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return seen, looked
}

func TestFinishAndNext(t *testing.T) {
	c, co := queueOf3(t, true)
	seen, _ := chainBatches(t, co, time.Second)
	if strings.Join(seen, ",") != "0,1,2" {
		t.Fatalf("seen %v", seen)
	}
	if b, err := co.NextBatch(0); err != nil || b != nil {
		t.Fatalf("NextBatch after the last: %v %v", b, err)
	}
	// A closed consumer: the batch ends unfinished and comes again.
	b := againBatch(t, c, co)
	co.Close()
	if _, err := b.FinishAndNext(co); err == nil {
		t.Fatal("FinishAndNext with a closed consumer succeeded")
	}
	wantOnlyAgain(t, c, "after FinishAndNext with a closed consumer")
}

// TestReadAhead chains batches bigger than one fetch with FinishAndNext: from the third on,
// each was read ahead while the one before was handled (libpgq's schema); WithReadAhead(false)
// reads none ahead. Every event comes once, in order, either way.
func TestReadAhead(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "ahead")
	if _, err := c.RegisterConsumer("q", "plain"); err != nil {
		t.Fatal(err)
	}
	var want []string
	for b := 0; b < 5; b++ {
		var evs []pgq.NewEvent
		for i := 0; i < 7; i++ {
			d := fmt.Sprintf("%d-%d", b, i)
			evs = append(evs, pgq.TextEvent("t", d))
			want = append(want, d)
		}
		if err := c.SendMany("q", evs); err != nil {
			t.Fatal(err)
		}
		tick(t, c, "q")
	}
	for _, on := range []bool{true, false} {
		name := map[bool]string{true: "ahead", false: "plain"}[on]
		co, err := c.NewConsumer("q", name, pgq.WithFetchSize(3), pgq.WithReadAhead(on))
		if err != nil {
			t.Fatal(err)
		}
		seen, looked := chainBatches(t, co, 0)
		co.Close()
		if strings.Join(seen, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: seen %v", name, seen)
		}
		wantLooked := fmt.Sprint([]bool{false, false, on, on, on})
		if fmt.Sprint(looked) != wantLooked {
			t.Fatalf("%s: read ahead per batch %v, want %v", name, looked, wantLooked)
		}
	}
}

func TestRetry(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	id, err := c.Send("q", pgq.TextEvent("job", "flaky"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send("q", pgq.TextEvent("job", "fine")); err != nil {
		t.Fatal(err)
	}
	tick(t, c, "q")
	co, err := c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	b, err := co.NextBatch(time.Second)
	if err != nil || b == nil {
		t.Fatalf("NextBatch: %v %v", b, err)
	}
	if _, err := b.Events(); err != nil {
		t.Fatal(err)
	}
	// Retries are applied by Finish: an event that is not in the batch fails it, and the
	// batch (with none of its retries) is delivered again.
	if err := b.Retry(id+1000, 0); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	wantStatus(t, b.Finish(), pgq.ErrNoSuchEvent)
	b, err = co.NextBatch(time.Second)
	if err != nil || b == nil {
		t.Fatalf("NextBatch after a failed Finish: %v %v", b, err)
	}
	if evs, err := b.Events(); err != nil || len(evs) != 2 {
		t.Fatalf("redelivered batch: %v, %v", evs, err)
	}
	if err := b.Retry(id, 0); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	if err := b.Finish(); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	// The retry is due at once; the ticker's maintenance moves it back into the queue.
	waitUntil(t, "the retried event to come back", 10*time.Second, func() bool {
		n, err := c.RetryEvents()
		if err != nil {
			t.Fatalf("RetryEvents: %v", err)
		}
		return n == 1
	})
	tick(t, c, "q")
	got := consumeAll(t, co)
	if len(got) != 1 || got[0].ID != id || *got[0].Data != "flaky" || got[0].Retry != 1 {
		t.Fatalf("after retry got %+v, want event %d once with Retry 1", got, id)
	}
}

func TestNextBatchWaitsForTheTicker(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	startTicker(t, c)
	for _, poll := range []bool{false, true} {
		co, err := c.NewConsumer("q", "c", pgq.WithConsumerPollOnly(poll), pgq.WithConsumerPollInterval(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		data := fmt.Sprint("poll only: ", poll)
		if _, err := c.Send("q", pgq.TextEvent("t", data)); err != nil {
			t.Fatal(err)
		}
		// NextBatch waits until the ticker has cut a batch holding the event.
		var got []pgq.Event
		waitUntil(t, "the event through NextBatch", 20*time.Second, func() bool {
			b, err := co.NextBatch(5 * time.Second)
			if err != nil {
				t.Fatalf("NextBatch: %v", err)
			}
			if b == nil {
				return false
			}
			evs, err := b.Events()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, evs...)
			if err := b.Finish(); err != nil {
				t.Fatal(err)
			}
			return len(got) > 0
		})
		if len(got) != 1 || *got[0].Data != data {
			t.Fatalf("got %+v", got)
		}
		co.Close()
	}
	_, err := c.NewConsumer("q", "c", pgq.WithConsumerPollInterval(-time.Second))
	wantStatus(t, err, pgq.ErrOutOfRange)
}

func TestCooperativeSubconsumersShareBatches(t *testing.T) {
	c, _ := openClient(t)
	if _, err := c.CreateQueue("q"); err != nil {
		t.Fatal(err)
	}
	subs := make([]*pgq.Consumer, 2)
	for i := range subs {
		co, err := c.NewConsumer("q", "c", pgq.WithConsumerSubconsumer(fmt.Sprint("s", i), 0))
		if err != nil {
			t.Fatalf("NewConsumer with a subconsumer: %v", err)
		}
		defer co.Close()
		if created, err := co.RegisterSubconsumer(); err != nil || !created {
			t.Fatalf("RegisterSubconsumer = %v, %v", created, err)
		}
		subs[i] = co
	}
	// Two batches: the first subconsumer takes one and holds it, so the second gets the other.
	ids := map[int64]bool{}
	batches := make([]*pgq.Batch, 2)
	for i := range batches {
		id, err := c.Send("q", pgq.TextEvent("t", fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = true
		tick(t, c, "q")
	}
	for i, co := range subs {
		b, err := co.NextBatch(5 * time.Second)
		if err != nil || b == nil {
			t.Fatalf("subconsumer %d NextBatch: %v, %v", i, b, err)
		}
		batches[i] = b
	}
	if batches[0].ID() == batches[1].ID() {
		t.Fatalf("both subconsumers got batch %d", batches[0].ID())
	}
	for i, b := range batches {
		if b.Subconsumer() != fmt.Sprint("s", i) || b.Consumer() != "c" {
			t.Fatalf("batch %d held by %q/%q", i, b.Consumer(), b.Subconsumer())
		}
	}
	wantStatus(t, subs[0].UnregisterSubconsumer(false), pgq.ErrBatchOpen)
	got := 0
	for _, b := range batches {
		evs, err := b.Events()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if !ids[ev.ID] {
				t.Fatalf("unexpected or repeated event %d", ev.ID)
			}
			delete(ids, ev.ID)
			got++
		}
		if err := b.Finish(); err != nil {
			t.Fatal(err)
		}
	}
	if got != 2 {
		t.Fatalf("the subconsumers got %d events together, want 2", got)
	}
	if err := subs[0].UnregisterSubconsumer(false); err != nil {
		t.Fatalf("UnregisterSubconsumer: %v", err)
	}
}

func TestNextBatchContext(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	co, err := c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()

	// Nothing comes: the deadline ends the wait with the context's error.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	b, err := co.NextBatchContext(ctx)
	if b != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NextBatchContext past the deadline = %v, %v", b, err)
	}
	// Cancelled from another goroutine (whether before or during the wait, the result is the
	// same).
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	time.AfterFunc(50*time.Millisecond, cancel2)
	if b, err := co.NextBatchContext(ctx2); b != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("NextBatchContext after cancel = %v, %v", b, err)
	}

	// A batch is returned as soon as it is there.
	if _, err := c.Send("q", pgq.TextEvent("t", "d")); err != nil {
		t.Fatal(err)
	}
	tick(t, c, "q")
	ctx3, cancel3 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel3()
	b, err = co.NextBatchContext(ctx3)
	if err != nil || b == nil {
		t.Fatalf("NextBatchContext with a batch waiting = %v, %v", b, err)
	}
	if err := b.Finish(); err != nil {
		t.Fatal(err)
	}
}
