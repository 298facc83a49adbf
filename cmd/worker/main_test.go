package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The worker's own defaults are its constants: every role it knows, and
// the topology declared at start.
func TestDefaultsAreTheWorkers(t *testing.T) {
	t.Parallel()
	typ := reflect.TypeFor[config]()
	roles, _ := typ.FieldByName("WorkerRoles")
	require.Equal(t, strings.Join(knownRoles, ","), roles.Tag.Get("default"))
	declare, _ := typ.FieldByName("DeclareTopology")
	require.Equal(t, declareAtStart, declare.Tag.Get("default"))
}
