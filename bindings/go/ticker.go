package pgq

// #include <pgq.h>
import "C"

import (
	"runtime"
	"sync"
	"time"
)

// TickerOption configures StartTicker.
type TickerOption func(*tickerConfig)

type tickerConfig struct {
	setters []func(o *C.pgq_ticker_options, e **C.pgq_error) C.pgq_status
	errs    []error
}

func (tc *tickerConfig) period(d time.Duration, f func(o *C.pgq_ticker_options, ms C.uint64_t, e **C.pgq_error) C.pgq_status) {
	ms, err := durationMS(d)
	if err != nil {
		tc.errs = append(tc.errs, err)
		return
	}
	tc.setters = append(tc.setters, func(o *C.pgq_ticker_options, e **C.pgq_error) C.pgq_status {
		return f(o, ms, e)
	})
}

// WithTickerPeriod sets the pause between ticker rounds (pgqd's ticker_period).
func WithTickerPeriod(d time.Duration) TickerOption {
	return func(tc *tickerConfig) {
		tc.period(d, func(o *C.pgq_ticker_options, ms C.uint64_t, e **C.pgq_error) C.pgq_status {
			return C.pgq_ticker_options_set_ticker_period_ms(o, ms, e)
		})
	}
}

// WithRetryPeriod sets the pause between moving due retry events back into their queues
// (pgqd's retry_period).
func WithRetryPeriod(d time.Duration) TickerOption {
	return func(tc *tickerConfig) {
		tc.period(d, func(o *C.pgq_ticker_options, ms C.uint64_t, e **C.pgq_error) C.pgq_status {
			return C.pgq_ticker_options_set_retry_period_ms(o, ms, e)
		})
	}
}

// WithMaintPeriod sets the pause between maintenance runs (pgqd's maint_period).
func WithMaintPeriod(d time.Duration) TickerOption {
	return func(tc *tickerConfig) {
		tc.period(d, func(o *C.pgq_ticker_options, ms C.uint64_t, e **C.pgq_error) C.pgq_status {
			return C.pgq_ticker_options_set_maint_period_ms(o, ms, e)
		})
	}
}

// WithTakeoverPeriod sets how often a standby ticker tries to become the active one.
func WithTakeoverPeriod(d time.Duration) TickerOption {
	return func(tc *tickerConfig) {
		tc.period(d, func(o *C.pgq_ticker_options, ms C.uint64_t, e **C.pgq_error) C.pgq_status {
			return C.pgq_ticker_options_set_takeover_period_ms(o, ms, e)
		})
	}
}

// WithTickNotify sets whether rounds that created ticks notify waiting consumers and workers
// at once (default true).
func WithTickNotify(notify bool) TickerOption {
	return func(tc *tickerConfig) {
		tc.setters = append(tc.setters, func(o *C.pgq_ticker_options, e **C.pgq_error) C.pgq_status {
			return C.pgq_ticker_options_set_notify(o, C.bool(notify), e)
		})
	}
}

// WithTickerEager sets eager ticking (on by default): a queue is ticked as soon as it has new
// events and its last tick is at least minLag old (0: the library's default, 5ms), so
// consumers see events about one ticker round after their commit. With eager false the
// ticker follows the queues' ticker_max_count / ticker_max_lag rules only, like pgqd (fewer,
// larger batches). On the official pgq extension the ticker always follows the rules.
func WithTickerEager(eager bool, minLag time.Duration) TickerOption {
	return func(tc *tickerConfig) {
		ms, err := durationMS(minLag)
		if err != nil {
			tc.errs = append(tc.errs, err)
			return
		}
		tc.setters = append(tc.setters, func(o *C.pgq_ticker_options, e **C.pgq_error) C.pgq_status {
			return C.pgq_ticker_options_set_eager(o, C.bool(eager), ms, e)
		})
	}
}

// WithTickerName sets a label for the ticker's thread and log lines (default: the database
// name).
func WithTickerName(name string) TickerOption {
	return func(tc *tickerConfig) {
		tc.setters = append(tc.setters, func(o *C.pgq_ticker_options, e **C.pgq_error) C.pgq_status {
			s, sl := strArg(name)
			return C.pgq_ticker_options_set_name(o, s, sl, e)
		})
	}
}

// Ticker runs PGQ's ticker for the client's database on a library thread: it cuts batches
// (ticks), moves due retry events back and runs maintenance, like pgqd. Several tickers on
// one database coordinate: one is active, the others stand by.
//
// Like a goroutine, a Ticker runs until stopped, referenced or not (it has no finalizer).
// All methods are safe for concurrent use.
type Ticker struct {
	mu  sync.RWMutex
	ptr *C.pgq_ticker
}

// StartTicker starts a ticker for the client's database, on a connection of its own, and
// returns at once (connecting happens on the ticker's thread, and is retried while the
// database is down).
func (c *Client) StartTicker(opts ...TickerOption) (*Ticker, error) {
	var tc tickerConfig
	for _, opt := range opts {
		opt(&tc)
	}
	if len(tc.errs) > 0 {
		return nil, tc.errs[0]
	}
	copts := C.pgq_ticker_options_new()
	if copts == nil {
		return nil, &Error{Status: ErrPanic, Message: "pgq_ticker_options_new failed"}
	}
	for _, set := range tc.setters {
		var cerr *C.pgq_error
		if st := set(copts, &cerr); st != C.PGQ_STATUS_OK {
			C.pgq_ticker_options_free(copts)
			return nil, takeError(st, cerr)
		}
	}
	var ptr *C.pgq_ticker
	started := false
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		started = true // opts is consumed, also on failure
		return C.pgq_ticker_start(p, copts, &ptr, e)
	})
	if err != nil {
		if !started {
			C.pgq_ticker_options_free(copts)
		}
		return nil, err
	}
	return &Ticker{ptr: ptr}, nil
}

// Stop stops the ticker and waits for its thread to end. It is idempotent.
func (t *Ticker) Stop() error {
	t.mu.RLock()
	if t.ptr != nil {
		var cerr *C.pgq_error
		st := C.pgq_ticker_stop(t.ptr, &cerr)
		runtime.KeepAlive(t)
		if err := check(st, cerr); err != nil {
			t.mu.RUnlock()
			return err
		}
	}
	t.mu.RUnlock()

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ptr == nil {
		return nil
	}
	var cerr *C.pgq_error
	st := C.pgq_ticker_join(t.ptr, &cerr)
	C.pgq_ticker_free(t.ptr)
	t.ptr = nil
	return check(st, cerr)
}

// Close is Stop, for io.Closer.
func (t *Ticker) Close() error { return t.Stop() }

// TickerStats is a snapshot of a Ticker's counters.
type TickerStats struct {
	Active           int       // databases where this ticker is the active one
	Standby          int       // databases where it stands by
	Ticks            uint64    // ticks created
	Rounds           uint64    // ticker rounds run
	RetryEventsMoved uint64    // retry events moved back into their queues
	MaintenanceRuns  uint64    // maintenance runs
	MaintenanceCalls uint64    // maintenance operations performed
	TablesVacuumed   uint64    // tables vacuumed by maintenance
	Errors           uint64    // errors (each retried after a backoff)
	Reconnects       uint64    // reconnections after errors
	LastTick         time.Time // when the last tick was created; zero if never
	FullRounds       uint64    // rounds that ran the full pgq.ticker(), not only the cheap checks
}

// Stats returns the ticker's counters.
func (t *Ticker) Stats() (TickerStats, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ptr == nil {
		return TickerStats{}, errClosed("ticker")
	}
	var cs C.pgq_ticker_stats
	cs.struct_size = C.uint32_t(C.sizeof_pgq_ticker_stats)
	var cerr *C.pgq_error
	st := C.pgq_ticker_stats_get(t.ptr, &cs, &cerr)
	runtime.KeepAlive(t)
	if err := check(st, cerr); err != nil {
		return TickerStats{}, err
	}
	s := TickerStats{
		Active:           int(cs.active),
		Standby:          int(cs.standby),
		Ticks:            uint64(cs.ticks),
		Rounds:           uint64(cs.rounds),
		RetryEventsMoved: uint64(cs.retry_events_moved),
		MaintenanceRuns:  uint64(cs.maintenance_runs),
		MaintenanceCalls: uint64(cs.maintenance_calls),
		TablesVacuumed:   uint64(cs.tables_vacuumed),
		Errors:           uint64(cs.errors),
		Reconnects:       uint64(cs.reconnects),
		FullRounds:       uint64(cs.full_rounds),
	}
	if cs.last_tick_us >= 0 {
		s.LastTick = time.UnixMicro(int64(cs.last_tick_us))
	}
	return s, nil
}
