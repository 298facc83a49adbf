// Package layout holds no code: its test keeps internal/'s folders in
// their layers (layout_test.go names them, lowest first).
package layout
