package pgq

// #include <stdlib.h>
// #include <pgq.h>
import "C"

import (
	"fmt"
	"unsafe"
)

// Status is the library's error category: the stable pgq_status numbers of the C ABI.
//
// A Status is itself an error, so every *Error can be matched against one with errors.Is:
//
//	if errors.Is(err, pgq.ErrNoSuchQueue) { ... }
type Status int32

// The statuses an *Error can carry. The numbers are those of the C ABI and never change.
const (
	ErrOther             Status = 1  // anything not covered below
	ErrNullPointer       Status = 2  // a required handle was missing (a bug in the binding)
	ErrInvalidUTF8       Status = 3  // a string argument is not valid UTF-8
	ErrInvalidInput      Status = 4  // rejected input: empty name, unknown parameter, NUL byte, ...
	ErrConnect           Status = 5  // cannot connect (unreachable, refused, credentials, bad DSN)
	ErrPool              Status = 6  // no pooled connection became available in time
	ErrConnectionLost    Status = 7  // an established connection broke while in use
	ErrNoSuchQueue       Status = 8  // the queue does not exist
	ErrNotSubscribed     Status = 9  // the consumer is not registered on the queue
	ErrConsumersAttached Status = 10 // the queue still has consumers (drop with force)
	ErrNoSuchBatch       Status = 11 // the batch is unknown (finished or never existed)
	ErrNoSuchEvent       Status = 12 // the event is not part of the batch
	ErrNoSuchTick        Status = 13 // the tick does not exist for the queue
	ErrInsertDisabled    Status = 14 // inserts into the queue are disabled
	ErrTickerDisabled    Status = 15 // the queue's ticker is paused or external
	ErrNotInstalled      Status = 16 // the pgq schema is missing from the database
	ErrPermissionDenied  Status = 17 // the server refused permission (SQLSTATE 42501)
	ErrDatabase          Status = 18 // any other error reported by the server
	ErrTimeout           Status = 19 // a wait ran out of time
	ErrStopped           Status = 20 // the worker or ticker was stopped
	ErrWouldDeadlock     Status = 21 // e.g. joining a worker from its own handler
	ErrHandler           Status = 22 // a batch handler returned an error or panicked
	ErrPanic             Status = 23 // the library caught a panic inside itself (a bug)
	ErrInvalidState      Status = 24 // a handle was used after Close, Finish, Commit, ...
	ErrOutOfRange        Status = 25 // a number does not fit (size, duration, ...)
)

var statusNames = map[Status]string{
	ErrOther:             "error",
	ErrNullPointer:       "null pointer",
	ErrInvalidUTF8:       "invalid UTF-8",
	ErrInvalidInput:      "invalid input",
	ErrConnect:           "cannot connect",
	ErrPool:              "no connection available",
	ErrConnectionLost:    "connection lost",
	ErrNoSuchQueue:       "no such queue",
	ErrNotSubscribed:     "consumer not registered",
	ErrConsumersAttached: "consumers attached",
	ErrNoSuchBatch:       "no such batch",
	ErrNoSuchEvent:       "no such event",
	ErrNoSuchTick:        "no such tick",
	ErrInsertDisabled:    "insert disabled",
	ErrTickerDisabled:    "ticker disabled",
	ErrNotInstalled:      "pgq not installed",
	ErrPermissionDenied:  "permission denied",
	ErrDatabase:          "database error",
	ErrTimeout:           "timeout",
	ErrStopped:           "stopped",
	ErrWouldDeadlock:     "would deadlock",
	ErrHandler:           "handler failed",
	ErrPanic:             "internal panic",
	ErrInvalidState:      "invalid state",
	ErrOutOfRange:        "out of range",
}

// String returns a short lower-case description, e.g. "no such queue".
func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status %d", int32(s))
}

// Error makes a Status usable as an error value and as an errors.Is target. It is the same
// as String, so printing a Status shows its description either way.
func (s Status) Error() string { return s.String() }

// Error is what every failing call of this package returns.
//
// Match the category with errors.Is(err, pgq.ErrNoSuchQueue) (or compare Status after
// errors.As); SQLState holds PostgreSQL's five-character code when the server reported the
// failure, else "".
type Error struct {
	Status   Status // category; stable numbers
	SQLState string // e.g. "P0001", "42501"; "" when the error did not come from the server
	Message  string // for humans; do not parse
	// Err is a Go error this one wraps (a recovered handler panic, for instance), else nil.
	Err error
}

func (e *Error) Error() string {
	msg := "pgq: " + e.Message
	if e.Message == "" {
		msg = "pgq: " + e.Status.String()
	}
	if e.SQLState != "" {
		msg += " (SQLSTATE " + e.SQLState + ")"
	}
	return msg
}

// Is reports whether target is this error's Status, or an *Error with the same Status.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case Status:
		return e.Status == t
	case *Error:
		return t != nil && e.Status == t.Status
	}
	return false
}

// Unwrap returns the wrapped Go error, if any.
func (e *Error) Unwrap() error { return e.Err }

// takeError converts a C error object into an *Error and frees it. A NULL object (the library
// failed to allocate one) still yields an *Error with the status.
func takeError(st C.pgq_status, cerr *C.pgq_error) error {
	e := &Error{Status: Status(st)}
	if cerr != nil {
		e.Status = Status(C.pgq_error_status(cerr))
		if m := C.pgq_error_message(cerr); m != nil {
			e.Message = C.GoString(m)
		}
		if s := C.pgq_error_sqlstate(cerr); s != nil {
			e.SQLState = C.GoString(s)
		}
		C.pgq_error_free(cerr)
	}
	if e.Message == "" {
		e.Message = e.Status.String()
	}
	return e
}

// check turns a status and its error object into nil or an *Error.
func check(st C.pgq_status, cerr *C.pgq_error) error {
	if st == C.PGQ_STATUS_OK {
		return nil
	}
	return takeError(st, cerr)
}

func errClosed(what string) error {
	return &Error{Status: ErrInvalidState, Message: what + " is closed"}
}

// goStr converts a borrowed pgq_str view into a Go string (copying it); ok is false for SQL
// NULL.
func goStr(s C.pgq_str) (string, bool) {
	if s.data == nil {
		return "", false
	}
	return string(unsafe.Slice((*byte)(unsafe.Pointer(s.data)), int(s.len))), true
}

// goStrPtr is goStr with NULL as a nil pointer.
func goStrPtr(s C.pgq_str) *string {
	v, ok := goStr(s)
	if !ok {
		return nil
	}
	return &v
}

// strArg passes a Go string to C as (pointer, length) without copying. The bytes hold no Go
// pointers, so this is allowed by the cgo rules; the library copies what it keeps.
func strArg(s string) (*C.char, C.size_t) {
	if len(s) == 0 {
		return nil, 0
	}
	// Go 1.19 has no unsafe.StringData; a string header starts with its data pointer.
	return *(**C.char)(unsafe.Pointer(&s)), C.size_t(len(s))
}
