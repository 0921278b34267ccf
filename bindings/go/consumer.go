package pgq

/*
#include <string.h>
#include <pgq.h>

// Reading events one cgo call each costs more than the C ABI's own work per event, so the
// binding reads them in runs: pgq_go_batch_fill copies up to `cap` events into Go-owned
// memory (fixed-size records in `meta`, field bytes back to back in `buf`; `*used_out` bytes)
// with one call.
typedef struct pgq_go_meta {
	int64_t id, time_us, txid;
	int32_t retry;
	uint32_t nulls; // bit i set: field i is SQL NULL
	uint64_t len[6]; // type, data, extra1..4
} pgq_go_meta;

// *pending (with *has_pending) carries an event's fields over to the next call when they did
// not fit into buf (the views stay valid until the next call on the batch). If not even the
// first event fits, *n_out is 0 and *need says how many bytes it needs. On an error, the
// *n_out events before it are complete.
static pgq_status pgq_go_batch_fill(pgq_batch *b, pgq_event_fields *pending, bool *has_pending,
                                    pgq_go_meta *meta, size_t cap, char *buf, size_t buf_cap,
                                    size_t *n_out, size_t *used_out, size_t *need,
                                    pgq_error **err) {
	size_t n = 0, used = 0;
	*need = 0;
	*used_out = 0;
	while (n < cap) {
		pgq_event_fields ev;
		if (*has_pending) {
			ev = *pending;
		} else {
			const pgq_event *view = NULL;
			ev.struct_size = sizeof ev;
			pgq_status st = pgq_batch_next_event_fields(b, &view, &ev, err);
			if (st != PGQ_STATUS_OK) {
				*n_out = n;
				*used_out = used;
				return st;
			}
			if (view == NULL) break; // end of the batch
		}
		pgq_str f[6] = {ev.type, ev.data, ev.extra1, ev.extra2, ev.extra3, ev.extra4};
		size_t size = 0;
		for (int i = 0; i < 6; i++) size += f[i].len;
		if (size > buf_cap - used) {
			*pending = ev;
			*has_pending = true;
			if (n == 0) *need = size;
			break;
		}
		*has_pending = false;
		pgq_go_meta *m = &meta[n];
		m->id = ev.id;
		m->time_us = ev.time_us;
		m->txid = ev.txid;
		m->retry = ev.retry;
		m->nulls = 0;
		for (int i = 0; i < 6; i++) {
			m->len[i] = f[i].len;
			if (f[i].data == NULL) {
				m->nulls |= 1u << i;
			} else if (f[i].len > 0) {
				memcpy(buf + used, f[i].data, f[i].len);
				used += f[i].len;
			}
		}
		n++;
	}
	*n_out = n;
	*used_out = used;
	return PGQ_STATUS_OK;
}
*/
import "C"

import (
	"context"
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
	sub          *string
	deadInterval time.Duration
	fetchSize    *uint32
	readAhead    *bool
	pollOnly     *bool
	pollInterval *time.Duration
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

// WithReadAhead sets whether to read ahead while the caller handles events (default true).
// It matters only for batches bigger than one fetch: their next chunk is fetched while the
// one before is handled, and on libpgq's schema, for a batch taken with Batch.FinishAndNext,
// the server also reads and sorts the next batch meanwhile, on a spare pooled connection.
// False: every fetch happens when Next needs it, on the batch's connection only.
func WithReadAhead(on bool) ConsumerOption {
	return func(o *consumerOptions) { o.readAhead = &on }
}

// WithConsumerPollOnly makes NextBatch only poll, without LISTENing for tick notifications
// (for PgBouncer in transaction pooling mode; a client opened WithTransactionPooling always
// polls only).
func WithConsumerPollOnly(pollOnly bool) ConsumerOption {
	return func(o *consumerOptions) { o.pollOnly = &pollOnly }
}

// WithConsumerPollInterval sets how often a waiting NextBatch looks for a batch between tick
// notifications.
func WithConsumerPollInterval(d time.Duration) ConsumerOption {
	return func(o *consumerOptions) { o.pollInterval = &d }
}

// WithConsumerSubconsumer makes the consumer cooperative (pgq_coop): it consumes as
// subconsumer sub of its consumer name, sharing the consumer's batches with the other
// subconsumers (each batch goes to one of them). deadInterval > 0 lets it take over the open
// batch of a sibling silent that long. Register it with Consumer.RegisterSubconsumer.
func WithConsumerSubconsumer(sub string, deadInterval time.Duration) ConsumerOption {
	return func(o *consumerOptions) {
		o.sub = &sub
		o.deadInterval = deadInterval
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
	var setters []func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status
	if o.fetchSize != nil {
		setters = append(setters, func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
			return C.pgq_consumer_set_fetch_size(p, C.uint32_t(*o.fetchSize), e)
		})
	}
	if o.sub != nil {
		ms, err := durationMS(o.deadInterval)
		if err != nil {
			co.Close()
			return nil, err
		}
		setters = append(setters, func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
			s, sl := strArg(*o.sub)
			return C.pgq_consumer_set_subconsumer(p, s, sl, ms, e)
		})
	}
	if o.readAhead != nil {
		setters = append(setters, func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
			return C.pgq_consumer_set_read_ahead(p, C.bool(*o.readAhead), e)
		})
	}
	if o.pollOnly != nil {
		setters = append(setters, func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
			return C.pgq_consumer_set_poll_only(p, C.bool(*o.pollOnly), e)
		})
	}
	if o.pollInterval != nil {
		ms, err := durationMS(*o.pollInterval)
		if err != nil {
			co.Close()
			return nil, err
		}
		setters = append(setters, func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
			return C.pgq_consumer_set_poll_interval_ms(p, ms, e)
		})
	}
	for _, set := range setters {
		if err := co.call(set); err != nil {
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

// RegisterSubconsumer registers the consumer's subconsumer (WithConsumerSubconsumer) with
// pgq_coop, and the consumer on the queue if needed; created is false when it already was.
func (co *Consumer) RegisterSubconsumer() (created bool, err error) {
	var b C.bool
	err = co.call(func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
		return C.pgq_consumer_register_subconsumer(p, &b, e)
	})
	return bool(b), err
}

// UnregisterSubconsumer unregisters the consumer's subconsumer. If it holds an open batch,
// releaseBatch leaves that batch to the next sibling that asks; without it the call fails
// with ErrBatchOpen.
func (co *Consumer) UnregisterSubconsumer(releaseBatch bool) error {
	return co.call(func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
		return C.pgq_consumer_unregister_subconsumer(p, C.bool(releaseBatch), e)
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

// contextSlice bounds each wait of NextBatchContext, so a cancellation is seen that soon.
const contextSlice = 200 * time.Millisecond

// NextBatchContext is NextBatch waiting until ctx is done: it returns a batch as soon as one
// is there, or ctx.Err() once ctx is cancelled or past its deadline (noticed within 200ms).
func (co *Consumer) NextBatchContext(ctx context.Context) (*Batch, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		wait := contextSlice
		if dl, ok := ctx.Deadline(); ok {
			if left := time.Until(dl); left < wait {
				wait = left
			}
		}
		b, err := co.NextBatch(wait)
		if err != nil || b != nil {
			return b, err
		}
	}
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
	mu       sync.Mutex
	ptr      *C.pgq_batch
	owned    bool // false inside a handler: the library ends the batch
	id       int64
	tickID   int64
	prevID   int64
	looked   bool // read ahead by the batch before (pgq_batch_looked_ahead)
	tickTime time.Time
	queue    string
	consumer string
	sub      string

	// Events read ahead from the library (see pgq_go_batch_fill), served by Next.
	pending    C.pgq_event_fields // an event whose fields did not fit into the last buffer
	hasPending C.bool
	meta       []C.pgq_go_meta // reused between fills
	buf        []byte          // reused between fills; events get an exact-size copy
	ready      []Event         // read, not yet returned
	readErr    error           // the failure after the ready events, reported after them
	atEnd      bool
}

// Read-ahead limits: events per cgo call, and the initial size of the byte buffer they are
// copied into (the field strings of one fill share one exact-size copy of it).
const (
	fillEvents = 64
	fillBytes  = 16 << 10
)

func newBatch(ptr *C.pgq_batch, owned bool) *Batch {
	b := &Batch{
		ptr:    ptr,
		owned:  owned,
		id:     int64(C.pgq_batch_id(ptr)),
		tickID: int64(C.pgq_batch_tick_id(ptr)),
		prevID: int64(C.pgq_batch_prev_tick_id(ptr)),
		looked: bool(C.pgq_batch_looked_ahead(ptr)),
	}
	b.tickTime = time.UnixMicro(int64(C.pgq_batch_tick_time_us(ptr)))
	b.queue, _ = goStr(C.pgq_batch_queue(ptr))
	b.consumer, _ = goStr(C.pgq_batch_consumer(ptr))
	b.sub, _ = goStr(C.pgq_batch_subconsumer(ptr))
	if owned {
		runtime.SetFinalizer(b, (*Batch).Close)
	}
	return b
}

// ID returns the batch id.
func (b *Batch) ID() int64 { return b.id }

// LookedAhead reports whether the server read and sorted this batch while the batch before it
// was handled (see WithReadAhead).
func (b *Batch) LookedAhead() bool { return b.looked }

// TickID returns the id of the tick that ends the batch.
func (b *Batch) TickID() int64 { return b.tickID }

// PrevTickID returns the id of the tick that starts the batch, -1 for the first batch after
// registration.
func (b *Batch) PrevTickID() int64 { return b.prevID }

// TickTime returns when the tick that ends the batch was taken.
func (b *Batch) TickTime() time.Time { return b.tickTime }

// Queue returns the queue's name.
func (b *Batch) Queue() string { return b.queue }

// Consumer returns the consumer's name.
func (b *Batch) Consumer() string { return b.consumer }

// Subconsumer returns the subconsumer holding the batch in cooperative mode, else "".
func (b *Batch) Subconsumer() string { return b.sub }

// IsStopping reports whether the Worker that lent this batch to its handler is stopping: a
// long handler may cut its work short and return an error to have the batch delivered again
// later. Always false for a batch from NextBatch, and after the batch ended.
func (b *Batch) IsStopping() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr == nil {
		return false
	}
	stopping := bool(C.pgq_batch_is_stopping(b.ptr))
	runtime.KeepAlive(b)
	return stopping
}

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
// server in chunks of the consumer's fetch size, so a batch of any size streams in bounded
// memory.
func (b *Batch) Next() (*Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr == nil {
		return nil, errClosed("batch")
	}
	if len(b.ready) == 0 && b.readErr == nil && !b.atEnd {
		b.fill()
	}
	if len(b.ready) > 0 {
		ev := &b.ready[0]
		b.ready = b.ready[1:]
		return ev, nil
	}
	if err := b.readErr; err != nil {
		b.readErr = nil // reported once; the next call asks the library again
		return nil, err
	}
	return nil, nil
}

// fill reads the next run of events from the library into b.ready (b.mu held).
func (b *Batch) fill() {
	if b.meta == nil {
		b.meta = make([]C.pgq_go_meta, fillEvents)
		b.buf = make([]byte, fillBytes)
	}
	for {
		var n, used, need C.size_t
		var cerr *C.pgq_error
		st := C.pgq_go_batch_fill(b.ptr, &b.pending, &b.hasPending, &b.meta[0], C.size_t(len(b.meta)),
			(*C.char)(unsafe.Pointer(&b.buf[0])), C.size_t(len(b.buf)), &n, &used, &need, &cerr)
		runtime.KeepAlive(b)
		if n == 0 && need > 0 && st == C.PGQ_STATUS_OK {
			b.buf = make([]byte, int(need)) // one event larger than the buffer
			continue
		}
		b.ready = decodeEvents(b.meta[:int(n)], string(b.buf[:int(used)]))
		if len(b.buf) > fillBytes {
			b.buf = make([]byte, fillBytes) // do not keep a huge buffer for the rest
		}
		if st != C.PGQ_STATUS_OK {
			b.readErr = takeError(st, cerr)
		} else if n == 0 {
			b.atEnd = true
		}
		return
	}
}

// decodeEvents turns filled records into Events whose strings are substrings of all.
func decodeEvents(meta []C.pgq_go_meta, all string) []Event {
	if len(meta) == 0 {
		return nil
	}
	evs := make([]Event, len(meta))
	strs := make([]string, 6*len(meta))
	off := 0
	for i := range meta {
		m := &meta[i]
		ev := &evs[i]
		fields := [6]**string{&ev.Type, &ev.Data, &ev.Extra1, &ev.Extra2, &ev.Extra3, &ev.Extra4}
		for f := 0; f < 6; f++ {
			if m.nulls&(1<<f) != 0 {
				continue // SQL NULL
			}
			n := int(m.len[f])
			s := &strs[6*i+f]
			*s = all[off : off+n]
			*fields[f] = s
			off += n
		}
		ev.ID = int64(m.id)
		ev.Time = time.UnixMicro(int64(m.time_us))
		ev.TxID = int64(m.txid)
		if m.retry > 0 { // -1: SQL NULL, the first delivery
			ev.Retry = int(m.retry)
		}
	}
	return evs
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

// FinishAndNext is Finish followed by co.NextBatch(0) in one round trip and one commit fewer:
// the next batch is taken in the transaction that finishes this one. It returns the next
// batch, or nil when there is none yet (wait for it with NextBatch). co must be the
// Consumer this batch came from. The Batch is ended afterwards, also when this fails (then
// nothing was committed and the batch is delivered again).
func (b *Batch) FinishAndNext(co *Consumer) (*Batch, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr == nil {
		return nil, errClosed("batch")
	}
	if !b.owned {
		return nil, &Error{Status: ErrInvalidState, Message: "a handler's batch is finished by returning nil"}
	}
	var next *C.pgq_batch
	consumed := false
	err := co.call(func(p *C.pgq_consumer, e **C.pgq_error) C.pgq_status {
		consumed = true
		return C.pgq_batch_finish_next(b.ptr, p, &next, e)
	})
	if !consumed { // co is closed: end the batch unfinished
		C.pgq_batch_free(b.ptr)
	}
	b.ptr = nil
	runtime.SetFinalizer(b, nil)
	if err != nil || next == nil {
		return nil, err
	}
	return newBatch(next, true), nil
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
