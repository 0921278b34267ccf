package pgq

// The //export trampolines the library calls on its own threads. They live in a file of their
// own because a file with //export may only declare, not define, C functions in its preamble.

// #include <pgq.h>
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// pgqGoBatchHandler is the pgq_batch_handler of every Worker: user_data is the cgo.Handle of
// its *workerState. It returns 0 when the Go handler returned nil (the library finishes the
// batch), 1 when it returned an error or panicked (the batch is delivered again).
//
//export pgqGoBatchHandler
func pgqGoBatchHandler(userData unsafe.Pointer, batch *C.pgq_batch) C.int32_t {
	st, ok := cgo.Handle(uintptr(userData)).Value().(*workerState)
	if !ok {
		return 1
	}
	if err := st.handle(batch); err != nil {
		return 1
	}
	return 0
}

// pgqGoFreeHandle is the user_data_free of every Worker: the library calls it once, after the
// last handler call.
//
//export pgqGoFreeHandle
func pgqGoFreeHandle(userData unsafe.Pointer) {
	cgo.Handle(uintptr(userData)).Delete()
}

// pgqGoLog is the pgq_log_fn installed by SetLogger: user_data is the cgo.Handle of the Go
// function. The strings are valid only during the call, so they are copied.
//
//export pgqGoLog
func pgqGoLog(userData unsafe.Pointer, level C.pgq_log_level, target *C.char, targetLen C.size_t, msg *C.char, msgLen C.size_t) {
	f, ok := cgo.Handle(uintptr(userData)).Value().(LogFunc)
	if !ok {
		return
	}
	defer func() { _ = recover() }() // a panicking logger must not unwind into the library
	f(LogLevel(level), goStringN(target, targetLen), goStringN(msg, msgLen))
}
