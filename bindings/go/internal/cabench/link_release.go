//go:build pgq_release && !pgq_pkgconfig

package cabench

// The same link flags as package pgq (../../link_release.go).

// #cgo CFLAGS: -I${SRCDIR}/../../../../include
// #cgo LDFLAGS: ${SRCDIR}/../../../../target/release/libpgq.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
import "C"
