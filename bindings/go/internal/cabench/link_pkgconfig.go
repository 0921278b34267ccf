//go:build pgq_pkgconfig

package cabench

// The same link flags as package pgq (../../link_pkgconfig.go).

// #cgo pkg-config: pgq
import "C"
