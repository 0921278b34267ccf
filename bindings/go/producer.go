package pgq

// #include <stdlib.h>
// #include <string.h>
// #include <pgq.h>
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// NewEvent is an event to send. Every field is optional text: nil is stored as SQL NULL,
// which PGQ consumers see differently from "". PGQ gives no meaning to the fields; by
// convention Type names the kind of event and Data holds its payload (often JSON or
// urlencoded key=value pairs), and the extras carry routing information such as a table name.
type NewEvent struct {
	Type, Data                     *string
	Extra1, Extra2, Extra3, Extra4 *string
}

// String returns a pointer to s, for the optional fields of NewEvent.
func String(s string) *string { return &s }

// TextEvent is a NewEvent with a type and data and no extras.
func TextEvent(typ, data string) NewEvent {
	return NewEvent{Type: &typ, Data: &data}
}

// cEvents is a copy of events in C memory: the C ABI takes arrays of structs holding
// pointers, and cgo forbids handing C Go memory that holds Go pointers.
type cEvents struct {
	arr *C.pgq_new_event
	buf unsafe.Pointer
}

func newCEvents(evs []NewEvent) cEvents {
	total := 0
	for i := range evs {
		for _, f := range evs[i].fields() {
			if f != nil {
				total += len(*f)
			}
		}
	}
	n := len(evs)
	if n == 0 {
		n = 1
	}
	// Never malloc(0): an empty non-NULL field needs a non-NULL pointer.
	buf := C.malloc(C.size_t(total + 1))
	arr := (*C.pgq_new_event)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(C.pgq_new_event{}))))
	if buf == nil || arr == nil {
		panic("pgq: out of memory")
	}
	bytes := unsafe.Slice((*byte)(buf), total+1)
	slots := unsafe.Slice(arr, n)
	off := 0
	put := func(f *string) C.pgq_str {
		if f == nil {
			return C.pgq_str{}
		}
		s := C.pgq_str{data: (*C.char)(unsafe.Pointer(&bytes[off])), len: C.size_t(len(*f))}
		off += copy(bytes[off:], *f)
		return s
	}
	for i := range evs {
		ev := &evs[i]
		slots[i] = C.pgq_new_event{
			_type:  put(ev.Type),
			data:   put(ev.Data),
			extra1: put(ev.Extra1),
			extra2: put(ev.Extra2),
			extra3: put(ev.Extra3),
			extra4: put(ev.Extra4),
		}
	}
	return cEvents{arr: arr, buf: buf}
}

func (c cEvents) free() {
	C.free(unsafe.Pointer(c.arr))
	C.free(c.buf)
}

func (ev *NewEvent) fields() [6]*string {
	return [6]*string{ev.Type, ev.Data, ev.Extra1, ev.Extra2, ev.Extra3, ev.Extra4}
}

// Send inserts one event into the queue in a transaction of its own and returns its id.
// Consumers see it in the first batch cut after it committed.
func (c *Client) Send(queue string, ev NewEvent) (int64, error) {
	q, ql := strArg(queue)
	ce := newCEvents([]NewEvent{ev})
	defer ce.free()
	var id C.int64_t
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_send(p, q, ql, ce.arr, &id, e)
	})
	return int64(id), err
}

// SendMany inserts events into the queue in one transaction (all or none), using the fast
// COPY path. An empty slice does nothing.
func (c *Client) SendMany(queue string, evs []NewEvent) error {
	q, ql := strArg(queue)
	ce := newCEvents(evs)
	defer ce.free()
	return c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_send_many(p, q, ql, ce.arr, C.size_t(len(evs)), e)
	})
}

// Tx is a database transaction on one pooled connection: the events sent and the SQL run
// through it commit or roll back together.
//
// A Tx is not meant to be shared between goroutines (its calls are serialised, so doing so
// is safe but pointless). End it with Commit or Rollback; Rollback after Commit is a no-op, so
//
//	tx, err := client.Begin()
//	if err != nil { ... }
//	defer tx.Rollback()
//	... tx.Send(...) ...
//	return tx.Commit()
//
// is the usual shape. A Tx that is never ended is rolled back when garbage collected, but
// holds its connection until then.
type Tx struct {
	mu     sync.Mutex
	ptr    *C.pgq_tx
	failed error // the first failed call: Commit refuses then
}

// Begin starts a transaction.
func (c *Client) Begin() (*Tx, error) {
	var ptr *C.pgq_tx
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_tx_begin(p, &ptr, e)
	})
	if err != nil {
		return nil, err
	}
	tx := &Tx{ptr: ptr}
	runtime.SetFinalizer(tx, (*Tx).Rollback)
	return tx, nil
}

func (tx *Tx) call(f func(p *C.pgq_tx, err **C.pgq_error) C.pgq_status) error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.ptr == nil {
		return errClosed("transaction")
	}
	var cerr *C.pgq_error
	st := f(tx.ptr, &cerr)
	runtime.KeepAlive(tx)
	err := check(st, cerr)
	if err != nil && tx.failed == nil {
		tx.failed = err
	}
	return err
}

// Send inserts one event into the queue within the transaction and returns its id.
func (tx *Tx) Send(queue string, ev NewEvent) (int64, error) {
	q, ql := strArg(queue)
	ce := newCEvents([]NewEvent{ev})
	defer ce.free()
	var id C.int64_t
	err := tx.call(func(p *C.pgq_tx, e **C.pgq_error) C.pgq_status {
		return C.pgq_tx_send(p, q, ql, ce.arr, &id, e)
	})
	return int64(id), err
}

// SendMany inserts events into the queue within the transaction (COPY).
func (tx *Tx) SendMany(queue string, evs []NewEvent) error {
	q, ql := strArg(queue)
	ce := newCEvents(evs)
	defer ce.free()
	return tx.call(func(p *C.pgq_tx, e **C.pgq_error) C.pgq_status {
		return C.pgq_tx_send_many(p, q, ql, ce.arr, C.size_t(len(evs)), e)
	})
}

// Exec runs SQL (one or more statements, no parameters, results discarded) within the
// transaction: the business change the events belong to.
//
// After a failed Send or Exec the server has usually aborted the transaction, so Commit then
// rolls back and fails (PostgreSQL itself would answer COMMIT with a silent ROLLBACK).
func (tx *Tx) Exec(sql string) error {
	s, sl := strArg(sql)
	return tx.call(func(p *C.pgq_tx, e **C.pgq_error) C.pgq_status {
		return C.pgq_tx_execute(p, s, sl, e)
	})
}

// Commit commits the transaction. The Tx is finished afterwards, also when Commit fails.
//
// If a call on the Tx failed before, Commit rolls back instead and returns an ErrInvalidState
// error wrapping that failure: nothing of a transaction with a failed step is committed.
func (tx *Tx) Commit() error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.ptr == nil {
		return errClosed("transaction")
	}
	if tx.failed != nil {
		C.pgq_tx_rollback(tx.ptr)
		tx.ptr = nil
		runtime.SetFinalizer(tx, nil)
		return &Error{Status: ErrInvalidState, Message: "transaction rolled back: an earlier call failed: " + tx.failed.Error(), Err: tx.failed}
	}
	var cerr *C.pgq_error
	st := C.pgq_tx_commit(tx.ptr, &cerr)
	tx.ptr = nil
	runtime.SetFinalizer(tx, nil)
	return check(st, cerr)
}

// Rollback rolls the transaction back. It is idempotent and a no-op after Commit, so it can
// be deferred right after Begin.
func (tx *Tx) Rollback() error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.ptr != nil {
		C.pgq_tx_rollback(tx.ptr)
		tx.ptr = nil
		runtime.SetFinalizer(tx, nil)
	}
	return nil
}
