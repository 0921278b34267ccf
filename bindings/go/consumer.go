package pgq

/*
#include <pgq.h>

// One event read with one cgo call (instead of eleven): the next event's fields, borrowed
// views valid until the next call on the batch.
typedef struct pgq_go_event {
	int64_t id, time_us, txid;
	int32_t retry;
	pgq_str f[6]; // type, data, extra1..4
} pgq_go_event;

static pgq_status pgq_go_batch_next(pgq_batch *b, pgq_go_event *out, bool *have, pgq_error **err) {
	const pgq_event *ev = NULL;
	pgq_status st = pgq_batch_next_event(b, &ev, err);
	*have = false;
	if (st != PGQ_STATUS_OK || ev == NULL) return st;
	*have = true;
	out->id = pgq_event_id(ev);
	out->time_us = pgq_event_time_us(ev);
	out->txid = pgq_event_txid(ev);
	out->retry = pgq_event_retry(ev);
	out->f[0] = pgq_event_type(ev);
	out->f[1] = pgq_event_data(ev);
	out->f[2] = pgq_event_extra1(ev);
	out->f[3] = pgq_event_extra2(ev);
	out->f[4] = pgq_event_extra3(ev);
	out->f[5] = pgq_event_extra4(ev);
	return st;
}
*/
import "C"

import (
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// Event is one event received in a batch.
type Event struct {
	ID   int64     // unique within the queue
	Time time.Time // when it was inserted
	TxID int64     // the inserting transaction's id
	// Retry counts how often the event was put back with Retry before this delivery; 0 for
	// the first delivery.
	Retry int
	// The fields as sent; nil is SQL NULL.
	Type, Data                     *string
	Extra1, Extra2, Extra3, Extra4 *string
}

// Consumer pulls batches of a queue for one registered consumer name.
//
// A Consumer is not meant to be shared between goroutines: its calls are serialised (so
// concurrent use is safe, but one NextBatch waits for another). Use one Consumer per
// goroutine, or the handler-based Worker, for parallelism.
type Consumer struct {
	mu          sync.Mutex
	ptr         *C.pgq_consumer
	queue, name string
}

// ConsumerOption configures NewConsumer.
type ConsumerOption func(*consumerOptions)

type consumerOptions struct {
	fetchSize *uint32
}

// WithFetchSize sets how many events Batch.Next fetches from the server at a time.
func WithFetchSize(n int) ConsumerOption {
	return func(o *consumerOptions) {
		v := uint32(n)
		if n < 0 || int(v) != n {
			v = 0 // rejected by the library as invalid input
		}
		o.fetchSize = &v
	}
}

// NewConsumer makes a pull consumer for queue under the consumer name. It does not register
// the name (see Consumer.Register or Client.RegisterConsumer).
func (c *Client) NewConsumer(queue, name string, opts ...ConsumerOption) (*Consumer, error) {
	var o consumerOptions
	for _, opt := range opts {
		opt(&o)
	}
	q, ql := strArg(queue)
	n, nl := strArg(name)
	var ptr *C.pgq_consumer
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_consumer_new(p, q, ql, n, nl, &ptr, e)
	})
	if err != nil {
		return nil, err
	}
	co := &Consumer{ptr: ptr, queue: queue, name: name}
	runtime.SetFinalizer(co, (*Consumer).Close)
	if o.fetchSize != nil {
		err := co.call(func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
			return C.pgq_consumer_set_fetch_size(p, C.uint32_t(*o.fetchSize), e)
		})
		if err != nil {
			co.Close()
			return nil, err
		}
	}
	return co, nil
}

// Queue returns the queue name.
func (co *Consumer) Queue() string { return co.queue }

// Name returns the consumer name.
func (co *Consumer) Name() string { return co.name }

func (co *Consumer) call(f func(p *C.pgq_consumer, err **C.pgq_error) C.pgq_status) error {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.ptr == nil {
		return errClosed("consumer")
	}
	var cerr *C.pgq_error
	st := f(co.ptr, &cerr)
	runtime.KeepAlive(co)
	return check(st, cerr)
}

// Register subscribes the consumer to its queue; created is false when it already was.
func (co *Consumer) Register() (created bool, err error) {
	var b C.bool
	err = co.call(func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
		return C.pgq_consumer_register(p, &b, e)
	})
	return bool(b), err
}

// Unregister removes the consumer from its queue, with its pending retries.
func (co *Consumer) Unregister() error {
	return co.call(func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
		return C.pgq_consumer_unregister(p, e)
	})
}

// NextBatch waits up to timeout for the next batch of events and returns it, or nil (and no
// error) if none came in time. A timeout of 0 (or less) only looks.
//
// The batch must be ended with Finish (handled: its events are not delivered again) or Close
// (not handled: the whole batch is delivered again, later or to the next NextBatch). Until
// then NextBatch returns the same batch again.
func (co *Consumer) NextBatch(timeout time.Duration) (*Batch, error) {
	if timeout < 0 {
		timeout = 0
	}
	ms, err := durationMS(timeout)
	if err != nil {
		return nil, err
	}
	var ptr *C.pgq_batch
	err = co.call(func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
		return C.pgq_consumer_next_batch(p, ms, &ptr, e)
	})
	if err != nil || ptr == nil {
		return nil, err
	}
	return newBatch(ptr, true), nil
}

// Close releases the consumer. It is idempotent. Batches already returned stay usable.
func (co *Consumer) Close() error {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.ptr != nil {
		C.pgq_consumer_free(co.ptr)
		co.ptr = nil
		runtime.SetFinalizer(co, nil)
	}
	return nil
}

// Batch is the events of one queue between two ticks, for one consumer.
//
// Read the events with Next or Events, optionally put some back with Retry, then end the
// batch with Finish, or with Close to have it delivered again. A Batch is not meant to be
// shared between goroutines (its calls are serialised).
type Batch struct {
	mu     sync.Mutex
	ptr    *C.pgq_batch
	owned  bool // false inside a handler: the library ends the batch
	id     int64
	tickID int64
	prevID int64
	// Next's out-parameters, kept here (under mu) so that a call allocates only the event.
	scratch struct {
		ev   C.pgq_go_event
		have C.bool
		err  *C.pgq_error
	}
}

func newBatch(ptr *C.pgq_batch, owned bool) *Batch {
	b := &Batch{
		ptr:    ptr,
		owned:  owned,
		id:     int64(C.pgq_batch_id(ptr)),
		tickID: int64(C.pgq_batch_tick_id(ptr)),
		prevID: int64(C.pgq_batch_prev_tick_id(ptr)),
	}
	if owned {
		runtime.SetFinalizer(b, (*Batch).Close)
	}
	return b
}

// ID returns the batch id.
func (b *Batch) ID() int64 { return b.id }

// TickID returns the id of the tick that ends the batch.
func (b *Batch) TickID() int64 { return b.tickID }

// PrevTickID returns the id of the tick that starts the batch, -1 for the first batch after
// registration.
func (b *Batch) PrevTickID() int64 { return b.prevID }

func (b *Batch) call(f func(p *C.pgq_batch, err **C.pgq_error) C.pgq_status) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr == nil {
		return errClosed("batch")
	}
	var cerr *C.pgq_error
	st := f(b.ptr, &cerr)
	runtime.KeepAlive(b)
	return check(st, cerr)
}

// Next returns the next event of the batch, or nil at its end. Events are fetched from the
// server in chunks, so a batch of any size streams in bounded memory.
func (b *Batch) Next() (*Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr == nil {
		return nil, errClosed("batch")
	}
	sc := &b.scratch
	sc.err = nil
	st := C.pgq_go_batch_next(b.ptr, &sc.ev, &sc.have, &sc.err)
	var ev *Event
	if st == C.PGQ_STATUS_OK && bool(sc.have) {
		// The views are valid until the next call on the batch: copy them now.
		ev = copyEvent(&sc.ev)
	}
	runtime.KeepAlive(b)
	return ev, check(st, sc.err)
}

// Events returns the remaining events of the batch.
func (b *Batch) Events() ([]Event, error) {
	var evs []Event
	for {
		ev, err := b.Next()
		if err != nil {
			return evs, err
		}
		if ev == nil {
			return evs, nil
		}
		evs = append(evs, *ev)
	}
}

// eventBox holds an Event and its field strings in one allocation.
type eventBox struct {
	ev   Event
	strs [6]string
}

// copyEvent copies a C event into Go memory: one allocation for the event and one for the
// bytes of all its fields.
func copyEvent(cev *C.pgq_go_event) *Event {
	total := 0
	for i := range cev.f {
		total += int(cev.f[i].len)
	}
	buf := make([]byte, total)
	all := *(*string)(unsafe.Pointer(&buf)) // buf is never written after the copies below
	box := &eventBox{}
	ptrs := [6]**string{&box.ev.Type, &box.ev.Data, &box.ev.Extra1, &box.ev.Extra2, &box.ev.Extra3, &box.ev.Extra4}
	off := 0
	for i := range cev.f {
		f := cev.f[i]
		if f.data == nil {
			continue // SQL NULL
		}
		n := int(f.len)
		copy(buf[off:off+n], unsafe.Slice((*byte)(unsafe.Pointer(f.data)), n))
		box.strs[i] = all[off : off+n]
		*ptrs[i] = &box.strs[i]
		off += n
	}
	retry := int(cev.retry)
	if retry < 0 {
		retry = 0 // SQL NULL: first delivery
	}
	box.ev.ID = int64(cev.id)
	box.ev.Time = time.UnixMicro(int64(cev.time_us))
	box.ev.TxID = int64(cev.txid)
	box.ev.Retry = retry
	return &box.ev
}

// Retry puts the event back into the queue, to be delivered again to this consumer after
// delay (negative counts as zero), with its Retry count increased. It takes effect when the
// batch is finished; a batch closed unfinished forgets it. An id that is not part of the batch
// makes Finish fail with ErrNoSuchEvent (and the batch is delivered again).
func (b *Batch) Retry(eventID int64, delay time.Duration) error {
	if delay < 0 {
		delay = 0
	}
	ms, err := durationMS(delay)
	if err != nil {
		return err
	}
	return b.call(func(p *C.pgq_batch, e **C.pgq_error) C.pgq_status {
		return C.pgq_batch_retry(p, C.int64_t(eventID), ms, e)
	})
}

// Finish marks the batch handled: its events (except those put back with Retry) are never
// delivered to this consumer again. The Batch is ended afterwards, also when Finish fails
// (then the batch is delivered again).
//
// Inside a handler (Worker) the library finishes the batch when the handler returns nil;
// Finish there fails with ErrInvalidState.
func (b *Batch) Finish() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr == nil {
		return errClosed("batch")
	}
	if !b.owned {
		return &Error{Status: ErrInvalidState, Message: "a handler's batch is finished by returning nil"}
	}
	var cerr *C.pgq_error
	st := C.pgq_batch_finish(b.ptr, &cerr)
	b.ptr = nil
	runtime.SetFinalizer(b, nil)
	return check(st, cerr)
}

// Close ends the batch without finishing it: it is delivered again (to the next NextBatch of
// this consumer name). It is idempotent and a no-op after Finish, so it can be deferred.
func (b *Batch) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr != nil {
		if b.owned {
			C.pgq_batch_free(b.ptr)
		}
		b.ptr = nil
		runtime.SetFinalizer(b, nil)
	}
	return nil
}
