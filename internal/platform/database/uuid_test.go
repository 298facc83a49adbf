package database

import (
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// A uuid in pgx's binary format scans into a uuid.UUID, a *uuid.UUID
// (NULL: nil) and a pgtype.UUID alike, and a bad length fails.
func TestUUIDScan(t *testing.T) {
	m := pgtype.NewMap()
	registerUUID(m)
	want := uuid.New()
	src := want[:]

	var got uuid.UUID
	require.NoError(t, m.Scan(pgtype.UUIDOID, pgtype.BinaryFormatCode, src, &got))
	require.Equal(t, want, got)

	var ptr *uuid.UUID
	require.NoError(t, m.Scan(pgtype.UUIDOID, pgtype.BinaryFormatCode, src, &ptr))
	require.Equal(t, want, *ptr)
	require.NoError(t, m.Scan(pgtype.UUIDOID, pgtype.BinaryFormatCode, nil, &ptr))
	require.Nil(t, ptr)

	var pg pgtype.UUID
	require.NoError(t, m.Scan(pgtype.UUIDOID, pgtype.BinaryFormatCode, src, &pg))
	require.Equal(t, [16]byte(want), pg.Bytes)

	require.Error(t, m.Scan(pgtype.UUIDOID, pgtype.BinaryFormatCode, nil, &got), "NULL into a uuid.UUID")
	require.Error(t, m.Scan(pgtype.UUIDOID, pgtype.BinaryFormatCode, src[:15], &got))

	// The text format still goes the way it went.
	text := []byte(want.String())
	got = uuid.UUID{}
	require.NoError(t, m.Scan(pgtype.UUIDOID, pgtype.TextFormatCode, text, &got))
	require.Equal(t, want, got)
}

// go test -run '^$' -bench UUIDScan ./internal/platform/database
func BenchmarkUUIDScan(b *testing.B) {
	id := uuid.New()
	for _, c := range []struct {
		name     string
		register func(*pgtype.Map)
	}{{"pgx-google-uuid", pgxuuid.Register}, {"direct", registerUUID}} {
		b.Run(c.name, func(b *testing.B) {
			m := pgtype.NewMap()
			c.register(m)
			var dst uuid.UUID
			plan := m.PlanScan(pgtype.UUIDOID, pgtype.BinaryFormatCode, &dst)
			for b.Loop() {
				if err := plan.Scan(id[:], &dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
