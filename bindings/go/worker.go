package pgq

/*
#include <stdint.h>
#include <pgq.h>

// The trampolines of callbacks.go (cgo declares them in _cgo_export.h; repeated here so
// this file can take their addresses).
extern int32_t pgqGoBatchHandler(void *user_data, pgq_batch *batch);
extern void pgqGoFreeHandle(void *user_data);

// Starts a worker whose handler is the Go trampoline; the cgo.Handle travels as user_data.
static pgq_status pgq_go_worker_start(const pgq_client *client, const char *q, size_t q_len,
                                      const char *consumer, size_t consumer_len,
                                      pgq_worker_options *opts, uintptr_t handle,
                                      pgq_worker **out, pgq_error **err) {
	return pgq_worker_start(client, q, q_len, consumer, consumer_len, opts, pgqGoBatchHandler,
	                        (void *)handle, pgqGoFreeHandle, out, err);
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Handler handles one batch for a Worker. It runs on one of the library's worker threads,
// once per batch, with the whole batch: read it with b.Next or b.Events and tag failures
// with b.Retry. Returning nil finishes the batch (its retries are queued in the same
// transaction); returning an error, or panicking, leaves it unfinished: it is delivered
// again after a backoff delay (or the worker stops, WithStopOnError). The batch is valid only
// during the call; do not call b.Finish or keep b.
type Handler func(b *Batch) error

// PanicError is the error a Handler's panic is reported as (wrapped in an *Error with
// status ErrHandler).
type PanicError struct {
	Value interface{} // what was passed to panic
	Stack []byte      // the handler goroutine's stack at the panic
}

func (p *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", p.Value) }

// WorkerOption configures StartWorker.
type WorkerOption func(*workerConfig)

type workerConfig struct {
	setters []func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status
	errs    []error
	onError func(error)
}

func (wc *workerConfig) set(f func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status) {
	wc.setters = append(wc.setters, f)
}

func (wc *workerConfig) ms(d time.Duration) C.uint64_t {
	ms, err := durationMS(d)
	if err != nil {
		wc.errs = append(wc.errs, err)
	}
	return ms
}

func u32(n int) C.uint32_t {
	if n < 0 || int64(n) > int64(^uint32(0)) {
		return 0 // rejected by the library as invalid input
	}
	return C.uint32_t(n)
}

// WithWorkerFetchSize sets how many events a handler's Batch.Next fetches per round trip
// (default 100).
func WithWorkerFetchSize(n int) WorkerOption {
	return func(wc *workerConfig) {
		wc.set(func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status {
			return C.pgq_worker_options_set_fetch_size(o, u32(n), e)
		})
	}
}

// WithWorkers sets the number of worker threads (default 1). More than one needs
// cooperative mode (WithSubconsumer); the handler then runs on several threads at once.
func WithWorkers(n int) WorkerOption {
	return func(wc *workerConfig) {
		wc.set(func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status {
			return C.pgq_worker_options_set_workers(o, u32(n), e)
		})
	}
}

// WithSubconsumer makes the worker a subconsumer of its consumer (cooperative mode, pgq_coop),
// sharing the consumer's batches with other subconsumers (with WithWorkers(n), its threads
// are subconsumers name-0 ... name-(n-1)); deadInterval > 0 lets it take over the batch of a
// subconsumer silent that long.
func WithSubconsumer(name string, deadInterval time.Duration) WorkerOption {
	return func(wc *workerConfig) {
		ms := wc.ms(deadInterval)
		wc.set(func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status {
			s, sl := strArg(name)
			return C.pgq_worker_options_set_subconsumer(o, s, sl, ms, e)
		})
	}
}

// WithWorkerPollInterval sets how often an idle worker looks for a batch without a tick
// notification (default 1s).
func WithWorkerPollInterval(d time.Duration) WorkerOption {
	return func(wc *workerConfig) {
		ms := wc.ms(d)
		wc.set(func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status {
			return C.pgq_worker_options_set_poll_interval_ms(o, ms, e)
		})
	}
}

// WithWorkerReadAhead sets whether the worker reads ahead while the handler works (default
// true): the next chunk of a batch bigger than one fetch, and on libpgq's schema the next
// batch, on a spare pooled connection.
func WithWorkerReadAhead(on bool) WorkerOption {
	return func(wc *workerConfig) {
		wc.set(func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status {
			return C.pgq_worker_options_set_read_ahead(o, C.bool(on), e)
		})
	}
}

// WithWorkerPollOnly makes the worker only poll, without a LISTEN connection (for PgBouncer in
// transaction pooling mode; a client opened WithTransactionPooling always polls only).
func WithWorkerPollOnly(pollOnly bool) WorkerOption {
	return func(wc *workerConfig) {
		wc.set(func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status {
			return C.pgq_worker_options_set_poll_only(o, C.bool(pollOnly), e)
		})
	}
}

// WithStopOnError makes a failing handler stop the worker (Wait then returns the failure)
// instead of having the batch delivered again after a backoff.
func WithStopOnError(stop bool) WorkerOption {
	return func(wc *workerConfig) {
		wc.set(func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status {
			return C.pgq_worker_options_set_stop_on_error(o, C.bool(stop), e)
		})
	}
}

// WithRetryBackoff sets the delay before a failed batch is delivered again: initial, doubling
// up to max (default 500ms up to 30s).
func WithRetryBackoff(initial, max time.Duration) WorkerOption {
	return func(wc *workerConfig) {
		i, m := wc.ms(initial), wc.ms(max)
		wc.set(func(o *C.pgq_worker_options, e **C.pgq_error) C.pgq_status {
			return C.pgq_worker_options_set_retry_backoff_ms(o, i, m, e)
		})
	}
}

// WithErrorHandler registers a function called with every handler failure (returned error
// or recovered panic, as an *Error with status ErrHandler). It runs on the worker thread
// right after the failed handler call; keep it short.
func WithErrorHandler(f func(error)) WorkerOption {
	return func(wc *workerConfig) { wc.onError = f }
}

// workerState is what the library's threads reach through the cgo.Handle.
type workerState struct {
	handler Handler
	onError func(error)
	lastErr atomic.Value // error: the latest handler failure
}

// handle runs the Go handler for one batch, turning a panic into an error.
func (s *workerState) handle(cb *C.pgq_batch) (err error) {
	b := newBatch(cb, false)
	defer func() {
		if r := recover(); r != nil {
			p := &PanicError{Value: r, Stack: debug.Stack()}
			err = &Error{Status: ErrHandler, Message: p.Error(), Err: p}
		}
		b.detach()
		if err != nil {
			s.lastErr.Store(err)
			s.report(err)
		}
	}()
	if e := s.handler(b); e != nil {
		return &Error{Status: ErrHandler, Message: "handler failed: " + e.Error(), Err: e}
	}
	return nil
}

func (s *workerState) report(err error) {
	if s.onError == nil {
		return
	}
	defer func() { _ = recover() }() // a panicking error handler must not unwind into C
	s.onError(err)
}

// Worker consumes a queue on the library's own threads, calling a Handler once per batch.
//
// Stop, Stats and Err may be called from any goroutine, also from the handler. Wait and
// Close must not be called from the handler while another goroutine waits (call Stop from
// the handler instead). Like a goroutine, a Worker runs until it is stopped, referenced or
// not (so it has no finalizer): Close it when done. It keeps working after its Client is
// closed.
type Worker struct {
	mu     sync.RWMutex // read-held by calls, write-held by Close's free
	joinMu sync.Mutex   // one join at a time
	ptr    *C.pgq_worker
	state  *workerState
}

// StartWorker starts consuming queue as consumer (register it first) with the handler h on
// a library worker thread, and returns at once.
func (c *Client) StartWorker(queue, consumer string, h Handler, opts ...WorkerOption) (*Worker, error) {
	if h == nil {
		return nil, &Error{Status: ErrInvalidInput, Message: "handler must not be nil"}
	}
	var wc workerConfig
	for _, opt := range opts {
		opt(&wc)
	}
	if len(wc.errs) > 0 {
		return nil, wc.errs[0]
	}
	copts := C.pgq_worker_options_new()
	if copts == nil {
		return nil, &Error{Status: ErrPanic, Message: "pgq_worker_options_new failed"}
	}
	for _, set := range wc.setters {
		var cerr *C.pgq_error
		if st := set(copts, &cerr); st != C.PGQ_STATUS_OK {
			C.pgq_worker_options_free(copts)
			return nil, takeError(st, cerr)
		}
	}
	state := &workerState{handler: h, onError: wc.onError}
	handle := cgo.NewHandle(state)
	q, ql := strArg(queue)
	n, nl := strArg(consumer)
	var ptr *C.pgq_worker
	started := false
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		started = true // opts is consumed, also on failure
		return C.pgq_go_worker_start(p, q, ql, n, nl, copts, C.uintptr_t(handle), &ptr, e)
	})
	if err != nil {
		if !started {
			C.pgq_worker_options_free(copts)
		}
		handle.Delete() // the library calls user_data_free only for a started worker
		return nil, err
	}
	return &Worker{ptr: ptr, state: state}, nil
}

// Stop asks the worker to stop: no new batch is taken, a running handler finishes. It returns
// at once and is idempotent; also fine from the handler.
func (w *Worker) Stop() error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.ptr == nil {
		return nil
	}
	var cerr *C.pgq_error
	st := C.pgq_worker_stop(w.ptr, &cerr)
	runtime.KeepAlive(w)
	return check(st, cerr)
}

// Wait blocks until the worker has stopped (after Stop, or after a handler failure with
// WithStopOnError) and returns what stopped it: nil after Stop, an *Error with status
// ErrHandler wrapping the handler's error after a failure. From the handler it returns
// ErrWouldDeadlock at once.
func (w *Worker) Wait() error {
	w.joinMu.Lock()
	defer w.joinMu.Unlock()
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.ptr == nil {
		return nil
	}
	var cerr *C.pgq_error
	st := C.pgq_worker_join(w.ptr, &cerr)
	runtime.KeepAlive(w)
	err := check(st, cerr)
	if e, ok := err.(*Error); ok && e.Status == ErrHandler && e.Err == nil {
		if last, ok := w.state.lastErr.Load().(error); ok {
			e.Err = last
		}
	}
	return err
}

// Err returns the latest handler failure (an *Error with status ErrHandler), or nil.
func (w *Worker) Err() error {
	err, _ := w.state.lastErr.Load().(error)
	return err
}

// Close stops the worker, waits for its threads and frees it. It is idempotent and returns
// what Wait would.
func (w *Worker) Close() error {
	if err := w.Stop(); err != nil {
		return err
	}
	err := w.Wait()
	if e, ok := err.(*Error); ok && e.Status == ErrWouldDeadlock {
		err = nil // from the handler: the library frees the worker once it returned
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ptr != nil {
		C.pgq_worker_free(w.ptr)
		w.ptr = nil
		runtime.SetFinalizer(w, nil)
	}
	return err
}

// WorkerStats is a snapshot of a Worker's counters.
type WorkerStats struct {
	Threads       int           // worker and listener threads running now
	Events        uint64        // events in finished batches
	Batches       uint64        // finished batches
	Retries       uint64        // events tagged for retry in finished batches
	Errors        uint64        // HandlerErrors + DBErrors
	HandlerErrors uint64        // handler calls that failed (batch delivered again)
	DBErrors      uint64        // database errors, retried with backoff
	Reconnects    uint64        // recoveries after database errors
	Wakeups       uint64        // tick notifications that woke the worker
	EmptyPolls    uint64        // polls that found no batch
	Lag           time.Duration // lag of the last finished batch; negative before the first
	LastBatch     time.Time     // when the last batch was finished; zero before the first
	Listening     bool          // whether the tick listener is connected
	LookedAhead   uint64        // batches read ahead while the one before was handled
}

// Stats returns the worker's counters.
func (w *Worker) Stats() (WorkerStats, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.ptr == nil {
		return WorkerStats{}, errClosed("worker")
	}
	var cs C.pgq_worker_stats
	cs.struct_size = C.uint32_t(C.sizeof_pgq_worker_stats)
	var cerr *C.pgq_error
	st := C.pgq_worker_stats_get(w.ptr, &cs, &cerr)
	runtime.KeepAlive(w)
	if err := check(st, cerr); err != nil {
		return WorkerStats{}, err
	}
	s := WorkerStats{
		Threads:       int(cs.threads),
		Events:        uint64(cs.events),
		Batches:       uint64(cs.batches),
		Retries:       uint64(cs.retries),
		Errors:        uint64(cs.errors),
		HandlerErrors: uint64(cs.handler_errors),
		DBErrors:      uint64(cs.db_errors),
		Reconnects:    uint64(cs.reconnects),
		Wakeups:       uint64(cs.wakeups),
		EmptyPolls:    uint64(cs.empty_polls),
		Lag:           msDuration(cs.lag_ms),
		Listening:     bool(cs.listening),
		LookedAhead:   uint64(cs.looked_ahead),
	}
	if cs.last_batch_time_us >= 0 {
		s.LastBatch = time.UnixMicro(int64(cs.last_batch_time_us))
	}
	return s, nil
}

// detach ends a handler's batch for Go: later calls on it fail with ErrInvalidState.
func (b *Batch) detach() {
	b.mu.Lock()
	b.ptr = nil
	b.hasPending = false
	b.mu.Unlock()
}
