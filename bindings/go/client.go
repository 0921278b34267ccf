package pgq

// #include <stdlib.h>
// #include <pgq.h>
import "C"

import (
	"runtime"
	"sync"
	"time"
)

// Version returns the version of the libpgq library linked in, e.g. "0.1.0".
func Version() string { return C.GoString(C.pgq_version()) }

// ABIVersion is the C ABI version this package was written for.
const ABIVersion = 1

// Client is a pool of connections to one PostgreSQL database.
//
// A Client is safe for concurrent use by multiple goroutines. Close it when done; objects
// made from it (consumers, batches, transactions) keep working after the Client is closed,
// until they are closed themselves.
type Client struct {
	mu  sync.RWMutex // read-held during C calls, write-held by Close
	ptr *C.pgq_client
}

// Option configures Open.
type Option func(*clientOptions)

type clientOptions struct {
	poolSize           *uint32
	connectTimeout     *time.Duration
	transactionPooling bool
}

// WithPoolSize sets the maximum number of pooled connections (the library's default when
// not given).
func WithPoolSize(n int) Option {
	return func(o *clientOptions) {
		v := uint32(n)
		if n < 0 || int(v) != n {
			v = 0 // rejected by the library as invalid input
		}
		o.poolSize = &v
	}
}

// WithConnectTimeout bounds how long establishing one connection may take.
func WithConnectTimeout(d time.Duration) Option {
	return func(o *clientOptions) { o.connectTimeout = &d }
}

// WithTransactionPooling is for a dsn that points at a connection pooler in transaction
// pooling mode (PgBouncer pool_mode = transaction). The client then sends every statement
// unnamed and relies on no session state: workers and Consumer waits only poll (no LISTEN),
// and StartTicker fails with ErrInvalidInput, since the ticker needs a direct connection
// (open another Client without the pooler for it).
func WithTransactionPooling(enabled bool) Option {
	return func(o *clientOptions) { o.transactionPooling = enabled }
}

// Open connects to the database named by dsn: a libpq-style "key=value ..." string or a
// postgresql:// URL. It fails with ErrConnect when the server cannot be reached.
func Open(dsn string, opts ...Option) (*Client, error) {
	if C.pgq_abi_version() != ABIVersion {
		return nil, &Error{Status: ErrInvalidState, Message: "libpgq ABI version mismatch: this package needs ABI 1"}
	}
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	copts := C.pgq_client_options_new()
	var cerr *C.pgq_error
	if o.poolSize != nil {
		if st := C.pgq_client_options_set_pool_size(copts, C.uint32_t(*o.poolSize), &cerr); st != C.PGQ_STATUS_OK {
			C.pgq_client_options_free(copts)
			return nil, takeError(st, cerr)
		}
	}
	if o.connectTimeout != nil {
		ms, err := durationMS(*o.connectTimeout)
		if err == nil && ms == 0 {
			err = &Error{Status: ErrInvalidInput, Message: "connect timeout must be positive"}
		}
		if err != nil {
			C.pgq_client_options_free(copts)
			return nil, err
		}
		if st := C.pgq_client_options_set_connect_timeout_ms(copts, ms, &cerr); st != C.PGQ_STATUS_OK {
			C.pgq_client_options_free(copts)
			return nil, takeError(st, cerr)
		}
	}
	if o.transactionPooling {
		if st := C.pgq_client_options_set_transaction_pooling(copts, C.bool(true), &cerr); st != C.PGQ_STATUS_OK {
			C.pgq_client_options_free(copts)
			return nil, takeError(st, cerr)
		}
	}
	d, dl := strArg(dsn)
	var ptr *C.pgq_client
	// The options object is consumed by connect, also on failure.
	if st := C.pgq_client_connect(d, dl, copts, &ptr, &cerr); st != C.PGQ_STATUS_OK {
		return nil, takeError(st, cerr)
	}
	c := &Client{ptr: ptr}
	runtime.SetFinalizer(c, (*Client).Close)
	return c, nil
}

// Close releases the pool. It is idempotent and waits for calls in progress on other
// goroutines; later calls fail with ErrInvalidState.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		C.pgq_client_free(c.ptr)
		c.ptr = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// call runs f with the live handle, or fails if the client is closed.
func (c *Client) call(f func(p *C.pgq_client, err **C.pgq_error) C.pgq_status) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ptr == nil {
		return errClosed("client")
	}
	var cerr *C.pgq_error
	st := f(c.ptr, &cerr)
	runtime.KeepAlive(c)
	return check(st, cerr)
}

// Install creates or upgrades the pgq schema in the database. It is idempotent, and works
// on a database that already has the official pgq extension.
func (c *Client) Install() error {
	return c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_install(p, e)
	})
}

// CreateQueue creates a queue; created is false when it already existed.
func (c *Client) CreateQueue(queue string) (created bool, err error) {
	q, ql := strArg(queue)
	var b C.bool
	err = c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_create_queue(p, q, ql, &b, e)
	})
	return bool(b), err
}

// DropQueue drops a queue and its events. Without force it fails with
// ErrConsumersAttached while consumers are registered.
func (c *Client) DropQueue(queue string, force bool) error {
	q, ql := strArg(queue)
	return c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_drop_queue(p, q, ql, C.bool(force), e)
	})
}

// SetQueueConfig sets one queue parameter, named without the "queue_" prefix:
// "ticker_max_count", "ticker_max_lag", "ticker_idle_period", "ticker_paused",
// "rotation_period", "external_ticker", "disable_insert". Values are text as PostgreSQL
// reads them ("500", "3 seconds", "true").
func (c *Client) SetQueueConfig(queue, param, value string) error {
	q, ql := strArg(queue)
	k, kl := strArg(param)
	v, vl := strArg(value)
	return c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_set_queue_config(p, q, ql, k, kl, v, vl, e)
	})
}

// RegisterConsumer subscribes a consumer to a queue; it receives the events of batches
// cut after this point. created is false when it was already registered.
func (c *Client) RegisterConsumer(queue, consumer string) (created bool, err error) {
	q, ql := strArg(queue)
	n, nl := strArg(consumer)
	var b C.bool
	err = c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_register_consumer(p, q, ql, n, nl, &b, e)
	})
	return bool(b), err
}

// RegisterConsumerAt registers a consumer positioned at an existing tick (or moves a
// registered one there, dropping its open batch): it receives the events after that tick.
// ErrNoSuchTick if the queue has no such tick.
func (c *Client) RegisterConsumerAt(queue, consumer string, tickID int64) (created bool, err error) {
	q, ql := strArg(queue)
	n, nl := strArg(consumer)
	var b C.bool
	err = c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_register_consumer_at(p, q, ql, n, nl, C.int64_t(tickID), &b, e)
	})
	return bool(b), err
}

// UnregisterConsumer removes a consumer from a queue, with its pending retries. It succeeds
// also when the consumer was not registered.
func (c *Client) UnregisterConsumer(queue, consumer string) error {
	q, ql := strArg(queue)
	n, nl := strArg(consumer)
	return c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_unregister_consumer(p, q, ql, n, nl, e)
	})
}

// Tick runs one ticker step over all queues (SQL pgq.ticker()) and returns how many queues
// got a new tick. Programs normally run a Ticker (or pgqd) instead.
func (c *Client) Tick() (int64, error) {
	var n C.int64_t
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_tick(p, &n, e)
	})
	return int64(n), err
}

// TickQueue ticks one queue if its thresholds are due and returns the new tick's id, or -1
// when no tick was needed.
func (c *Client) TickQueue(queue string) (int64, error) {
	q, ql := strArg(queue)
	var id C.int64_t
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_tick_queue(p, q, ql, &id, e)
	})
	return int64(id), err
}

// RetryEvents moves retried events whose delay has passed back into their queues (what a
// ticker does periodically) and returns how many moved.
func (c *Client) RetryEvents() (int64, error) {
	var n C.uint64_t
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_retry_events(p, &n, e)
	})
	return int64(n), err
}

// Maintenance runs one maintenance round (table rotation, cleanup, vacuum), what a ticker
// does periodically, and returns the number of operations performed.
func (c *Client) Maintenance() (int64, error) {
	var n C.uint64_t
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_maintenance(p, &n, e)
	})
	return int64(n), err
}

// ForceTick makes the next Tick cut a batch boundary on the queue even if its thresholds are
// not reached.
func (c *Client) ForceTick(queue string) error {
	q, ql := strArg(queue)
	return c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		return C.pgq_force_tick(p, q, ql, e)
	})
}

// durationMS converts a non-negative duration to whole milliseconds, rounding up so that a
// positive duration never becomes zero.
func durationMS(d time.Duration) (C.uint64_t, error) {
	if d < 0 {
		return 0, &Error{Status: ErrOutOfRange, Message: "duration must not be negative: " + d.String()}
	}
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	return C.uint64_t(ms), nil
}
